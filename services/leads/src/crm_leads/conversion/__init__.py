"""Lead conversion: the saga that turns a lead into a customer, a contact and opportunities
across the customers and sales services (orchestrated here, over JetStream)."""
