"""Pure webhook-source rules: who may create a source and with what, the principal a
delivery captures as, and a delivery's idempotency key. No I/O."""

from __future__ import annotations

import hashlib
import uuid
from dataclasses import dataclass
from typing import Any

from crm_leads.webhook.mappers import MAPPERS
from crm_platform.auth import ROLE_ADMIN, ROLE_INTEGRATION, ROLE_MANAGER, Principal
from crm_platform.errors import FieldViolation, InvalidArgument
from crm_platform.ids import parse_optional_id
from crm_platform.validation import clean_text

MANAGE_ROLES = frozenset({ROLE_ADMIN, ROLE_MANAGER})
MAX_NAME = 200
# Fixed namespace of the request ids derived from deliveries (never change it: retries of
# deliveries captured before the change would capture again).
REQUEST_ID_NAMESPACE = uuid.uuid5(uuid.NAMESPACE_URL, "https://crm.example.dev/webhooks")


@dataclass(frozen=True)
class NewSource:
    name: str
    platform: str


def validate_source(
    *, principal: Principal, name: str, platform: str, org_unit_id: str
) -> NewSource:
    """Managers and admins connect platforms; the role is checked before the body, so a rep
    learns nothing from validation errors."""
    principal.require_any(MANAGE_ROLES)
    violations: list[FieldViolation] = []
    name = clean_text(name)
    if not name:
        violations.append(FieldViolation("name", "required"))
    elif len(name) > MAX_NAME:
        violations.append(FieldViolation("name", f"at most {MAX_NAME} characters"))
    if platform not in MAPPERS:
        violations.append(FieldViolation("platform", f"one of {', '.join(MAPPERS)}"))
    unit = parse_optional_id(org_unit_id, "org_unit_id", violations)
    # A source may belong to the caller's unit or one below it, but leads holds no copy of
    # the org tree yet and so cannot tell which units are below: only the caller's own unit
    # is accepted for now.
    if unit is not None and unit != principal.org_unit_id:
        violations.append(FieldViolation("org_unit_id", "must be your own org unit"))
    if violations:
        raise InvalidArgument.from_violations(violations, reason="WEBHOOK_SOURCE_INVALID")
    return NewSource(name=name, platform=platform)


def capturing_principal(source: Any) -> Principal:
    """Deliveries capture as an integration of the source's org unit, which therefore owns
    the leads they create."""
    return Principal(
        tenant_id=source.tenant_id,
        subject=f"webhook:{source.id}",
        org_unit_id=source.owner_org_id,
        org_path=source.owner_org_path,
        roles=frozenset({ROLE_INTEGRATION}),
    )


def request_id(source_id: uuid.UUID, event_id: str, body: bytes) -> uuid.UUID:
    """The capture's idempotency key, so a platform retrying an enquiry (with a new
    timestamp, hence a new signature the replay check lets through) captures it once: the
    platform's own event id when the payload has one, else the exact body."""
    if event_id:
        name = f"{source_id}/event/{event_id}"
    else:
        name = f"{source_id}/body/{hashlib.sha256(body).hexdigest()}"
    return uuid.uuid5(REQUEST_ID_NAMESPACE, name)
