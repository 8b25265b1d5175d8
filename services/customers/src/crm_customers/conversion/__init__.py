"""The customers step of the lead conversion saga: match or create the customer and the
contact of a converting lead, undo it on compensation, and the tenant's matching rules."""
