"""Event handlers of the customers service: its steps of the lead conversion saga and the
events lifecycle stages are derived from."""

from __future__ import annotations

from crm_customers.conversion import handlers
from crm_customers.conversion.models import conversion_records
from crm_customers.customer.models import customers
from crm_customers.lifecycle import handlers as lifecycle_handlers
from crm_customers.settings import Settings
from crm_platform.consumers import ORDER_FREE_CONCURRENCY, ConsumerSpec
from crm_platform.org_moves import path_consumer
from crm_platform.runtime import Runtime


def consumers(rt: Runtime) -> list[ConsumerSpec]:
    assert isinstance(rt.settings, Settings)
    return [
        path_consumer("customers", customers.c.owner_org_path, conversion_records.c.org_path),
        ConsumerSpec(
            name="customers-prepare-conversion",
            event_type="crm.cmd.customers.prepare_conversion.v1",
            handler=handlers.prepare_handler(rt.settings.default_phone_region),
            concurrency=ORDER_FREE_CONCURRENCY,
        ),
        ConsumerSpec(
            name="customers-undo-conversion",
            event_type="crm.cmd.customers.undo_conversion.v1",
            handler=handlers.on_undo_conversion,
            concurrency=ORDER_FREE_CONCURRENCY,
        ),
        *(
            ConsumerSpec.batched(
                name=f"customers-lifecycle-{purpose}",
                event_type=event_type,
                handler=lifecycle_handlers.handler(event_type, rt.settings.lifecycle_thresholds),
            )
            for purpose, event_type in (
                ("opportunities", lifecycle_handlers.OPPORTUNITY_CREATED),
                ("tickets", lifecycle_handlers.TICKET_CREATED),
                ("conversions", lifecycle_handlers.LEAD_CONVERTED),
            )
        ),
    ]
