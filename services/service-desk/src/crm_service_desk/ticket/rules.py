"""Pure ticket rules: validation and normalisation of a new ticket. No I/O."""

from __future__ import annotations

import uuid
from dataclasses import dataclass

from crm.servicedesk.v1 import ticket_pb2
from crm_platform.errors import FieldViolation, InvalidArgument
from crm_platform.ids import parse_optional_id
from crm_platform.protos import enum_by_short_name, parse_enum
from crm_platform.validation import clean_text

MAX_SUBJECT = 200
MAX_DESCRIPTION = 10_000
DEFAULT_PRIORITY = ticket_pb2.TICKET_PRIORITY_NORMAL
# REST names priorities without the enum prefix: LOW, NORMAL, HIGH, URGENT.
PRIORITIES = enum_by_short_name(ticket_pb2.TicketPriority)
CHANNELS = ("api", "email", "self_service")
DEFAULT_CHANNEL = "api"


@dataclass(frozen=True)
class NewTicket:
    subject: str
    description: str
    customer_id: uuid.UUID | None
    priority: int
    channel: str


def validate_new_ticket(
    *, subject: str, description: str, customer_id: str, priority: int | str, channel: str
) -> NewTicket:
    """Collects every violation at once, so a client fixes a form in one round trip."""
    violations: list[FieldViolation] = []
    subject = clean_text(subject)
    if not subject:
        violations.append(FieldViolation("subject", "required"))
    elif len(subject) > MAX_SUBJECT:
        violations.append(FieldViolation("subject", f"at most {MAX_SUBJECT} characters"))
    # Only trimmed: line breaks and indentation in a description are the customer's words.
    description = description.strip()
    if len(description) > MAX_DESCRIPTION:
        violations.append(FieldViolation("description", f"at most {MAX_DESCRIPTION} characters"))
    channel = clean_text(channel).lower() or DEFAULT_CHANNEL
    if channel not in CHANNELS:
        violations.append(FieldViolation("channel", f"one of {', '.join(CHANNELS)}"))
    new = NewTicket(
        subject=subject,
        description=description,
        customer_id=parse_optional_id(customer_id, "customer_id", violations),
        # REST sends a name ("" = default), gRPC an enum number (UNSPECIFIED = default).
        priority=parse_enum(priority, PRIORITIES, "priority", violations, default=DEFAULT_PRIORITY),
        channel=channel,
    )
    if violations:
        raise InvalidArgument.from_violations(violations, reason="TICKET_INVALID")
    return new
