"""The event contract: subjects and their payload types, streams, and the envelope.

Every subject is declared once here. Subject = ``crm.<domain>.<entity>.<verb>.v1``; on the
wire it may carry a deployment namespace prefix (``<ns>.crm...``) so test runs and several
deployments can share one NATS server.
"""

from __future__ import annotations

import uuid
from dataclasses import dataclass
from datetime import UTC, datetime

from google.protobuf import any_pb2
from google.protobuf.message import DecodeError, Message

from crm.common.v1 import event_pb2
from crm.customers.v1 import commands_pb2 as customers_commands
from crm.customers.v1 import events_pb2 as customers_events
from crm.directory.v1 import events_pb2 as directory_events
from crm.leads.v1 import events_pb2 as leads_events
from crm.marketing.v1 import events_pb2 as marketing_events
from crm.sales.v1 import commands_pb2 as sales_commands
from crm.sales.v1 import events_pb2 as sales_events
from crm.servicedesk.v1 import events_pb2 as servicedesk_events
from crm_platform.ids import new_id

SUBJECTS: dict[str, type[Message]] = {
    "crm.directory.tenant.created.v1": directory_events.TenantCreated,
    "crm.directory.org_unit.created.v1": directory_events.OrgUnitCreated,
    "crm.directory.org_unit.moved.v1": directory_events.OrgUnitMoved,
    "crm.directory.user.created.v1": directory_events.UserCreated,
    "crm.directory.user.deactivated.v1": directory_events.UserDeactivated,
    "crm.leads.lead.created.v1": leads_events.LeadCreated,
    "crm.leads.lead.merged.v1": leads_events.LeadMerged,
    "crm.leads.lead.scored.v1": leads_events.LeadScored,
    "crm.leads.lead.updated.v1": leads_events.LeadUpdated,
    "crm.leads.lead.verified.v1": leads_events.LeadVerified,
    "crm.leads.lead.closed.v1": leads_events.LeadClosed,
    "crm.leads.lead.claimed.v1": leads_events.LeadClaimed,
    "crm.leads.lead.released.v1": leads_events.LeadReleased,
    "crm.leads.lead.assigned.v1": leads_events.LeadAssigned,
    "crm.leads.lead.followed_up.v1": leads_events.LeadFollowedUp,
    "crm.leads.lead_batch.created.v1": leads_events.LeadBatchCreated,
    "crm.leads.lead_batch.merged.v1": leads_events.LeadBatchMerged,
    "crm.leads.lead.distributed.v1": leads_events.LeadDistributed,
    "crm.leads.lead.passed_up.v1": leads_events.LeadPassedUp,
    "crm.leads.lead_batch.distributed.v1": leads_events.LeadBatchDistributed,
    "crm.leads.lead_batch.assigned.v1": leads_events.LeadBatchAssigned,
    "crm.leads.lead.accepted.v1": leads_events.LeadAccepted,
    "crm.leads.lead.rejected.v1": leads_events.LeadRejected,
    "crm.leads.lead.sla_warning.v1": leads_events.LeadSlaWarning,
    "crm.leads.lead.sla_breached.v1": leads_events.LeadSlaBreached,
    "crm.leads.lead.reclaimed.v1": leads_events.LeadReclaimed,
    "crm.leads.lead.converted.v1": leads_events.LeadConverted,
    "crm.leads.conversion.failed.v1": leads_events.LeadConversionFailed,
    "crm.customers.customer.created.v1": customers_events.CustomerCreated,
    "crm.customers.contact.created.v1": customers_events.ContactCreated,
    "crm.customers.customer.updated.v1": customers_events.CustomerUpdated,
    "crm.customers.customer.moved.v1": customers_events.CustomerMoved,
    "crm.customers.contact.updated.v1": customers_events.ContactUpdated,
    "crm.customers.customer.tagged.v1": customers_events.CustomerTagged,
    "crm.customers.customer.untagged.v1": customers_events.CustomerUntagged,
    "crm.customers.contact.tagged.v1": customers_events.ContactTagged,
    "crm.customers.contact.untagged.v1": customers_events.ContactUntagged,
    "crm.customers.customer.deleted.v1": customers_events.CustomerDeleted,
    "crm.customers.contact.deleted.v1": customers_events.ContactDeleted,
    "crm.customers.conversion.prepared.v1": customers_events.ConversionPrepared,
    "crm.customers.conversion.failed.v1": customers_events.ConversionFailed,
    "crm.customers.conversion.undone.v1": customers_events.ConversionUndone,
    "crm.customers.customer.lifecycle_changed.v1": customers_events.CustomerLifecycleChanged,
    "crm.sales.opportunity.created.v1": sales_events.OpportunityCreated,
    "crm.sales.opportunity.deleted.v1": sales_events.OpportunityDeleted,
    "crm.sales.conversion.completed.v1": sales_events.ConversionCompleted,
    "crm.sales.conversion.failed.v1": sales_events.ConversionFailed,
    "crm.sales.conversion.undone.v1": sales_events.ConversionUndone,
    "crm.servicedesk.ticket.created.v1": servicedesk_events.TicketCreated,
    "crm.marketing.campaign.created.v1": marketing_events.CampaignCreated,
    # Commands (orchestration only): crm.cmd.<receiving domain>.<action>.v1, sent by the
    # leads service's conversion saga; the receiver answers with events of its own domain.
    "crm.cmd.customers.prepare_conversion.v1": customers_commands.PrepareConversion,
    "crm.cmd.customers.undo_conversion.v1": customers_commands.UndoConversion,
    "crm.cmd.sales.create_conversion_opportunities.v1": (
        sales_commands.CreateConversionOpportunities
    ),
    "crm.cmd.sales.undo_conversion.v1": sales_commands.UndoConversion,
}

# Domain (second subject token) -> stream; one stream per producing service.
STREAMS: dict[str, str] = {
    "directory": "CRM_DIRECTORY",
    "leads": "CRM_LEADS",
    "customers": "CRM_CUSTOMERS",
    "sales": "CRM_SALES",
    "servicedesk": "CRM_SERVICEDESK",
    "marketing": "CRM_MARKETING",
    "cmd": "CRM_COMMANDS",
}
DLQ_STREAM = "CRM_DLQ"
DLQ_DOMAIN = "dlq"
STREAM_MAX_AGE_SECONDS = 14 * 24 * 3600
DLQ_MAX_AGE_SECONDS = 30 * 24 * 3600
DUPLICATE_WINDOW_SECONDS = 20 * 60

CONTENT_TYPE = "application/protobuf"
HEADER_EVENT_TYPE = "Crm-Event-Type"
HEADER_DLQ_REASON = "Crm-Dlq-Reason"


class UnknownSubject(ValueError):
    pass


class PoisonMessage(ValueError):
    """A message that can never be processed (undecodable, wrong type): dead-letter it."""


@dataclass(frozen=True)
class Namespace:
    """Maps contract subjects/streams to wire names for one deployment."""

    prefix: str = ""

    def subject(self, event_type: str) -> str:
        return f"{self.prefix}.{event_type}" if self.prefix else event_type

    def event_type(self, wire_subject: str) -> str:
        if self.prefix and wire_subject.startswith(self.prefix + "."):
            return wire_subject[len(self.prefix) + 1 :]
        return wire_subject

    def stream(self, name: str) -> str:
        return f"{self.prefix.upper()}_{name}" if self.prefix else name

    def stream_subjects(self, domain: str) -> list[str]:
        return [self.subject(f"crm.{domain}.>")]

    def dlq_subject(self, event_type: str) -> str:
        return self.subject(f"crm.{DLQ_DOMAIN}.{event_type}")

    def stream_for(self, event_type: str) -> str:
        domain = event_type.split(".")[1]
        return self.stream(STREAMS[domain])


def payload_type(event_type: str) -> type[Message]:
    try:
        return SUBJECTS[event_type]
    except KeyError:
        raise UnknownSubject(event_type) from None


def build_event(
    *,
    event_type: str,
    payload: Message,
    tenant_id: uuid.UUID | str,
    org_path: str,
    producer: str,
    correlation_id: str = "",
    causation_id: str = "",
    event_id: uuid.UUID | None = None,
    occurred_at: datetime | None = None,
) -> event_pb2.Event:
    expected = payload_type(event_type)
    if not isinstance(payload, expected):
        raise TypeError(f"{event_type} carries {expected.__name__}, not {type(payload).__name__}")
    eid = str(event_id or new_id())
    envelope = event_pb2.Event(
        id=eid,
        type=event_type,
        tenant_id=str(tenant_id),
        org_path=org_path,
        producer=producer,
        correlation_id=correlation_id or eid,
        causation_id=causation_id,
    )
    envelope.occurred_at.FromDatetime(occurred_at or datetime.now(UTC))
    any_msg = any_pb2.Any()
    any_msg.Pack(payload)
    envelope.payload.CopyFrom(any_msg)
    return envelope


@dataclass(frozen=True)
class ReceivedEvent:
    envelope: event_pb2.Event
    payload: Message

    @property
    def id(self) -> uuid.UUID:
        return uuid.UUID(self.envelope.id)

    @property
    def tenant_id(self) -> uuid.UUID:
        return uuid.UUID(self.envelope.tenant_id)


def parse_event(data: bytes) -> ReceivedEvent:
    try:
        envelope = event_pb2.Event.FromString(data)
        uuid.UUID(envelope.id)
        payload = payload_type(envelope.type)()
        if not envelope.payload.Unpack(payload):
            raise PoisonMessage(f"payload is not {type(payload).__name__}")
    except (DecodeError, ValueError) as exc:
        raise PoisonMessage(str(exc) or type(exc).__name__) from exc
    return ReceivedEvent(envelope, payload)
