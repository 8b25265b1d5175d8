"""Pure rules for editing a lead's profile (UpdateLead, PATCH): the update mask, validation
of the edited profile and the optimistic-concurrency check. No I/O."""

from __future__ import annotations

import dataclasses
import uuid
from collections.abc import Collection, Mapping
from dataclasses import dataclass
from typing import Any

from crm_leads.lead.rules import KEY_EMAIL, KEY_OPEN_ID, KEY_PHONE, NewLead, validate_new_lead
from crm_platform.errors import EtagMismatch, FieldViolation, InvalidArgument
from crm_platform.protos import etag

# What a user may change. Status, owner, assignee, score, grade, source and verification
# change only through their own flows (pools, review, scoring, conversion ...).
EDITABLE = (
    "full_name",
    "phone",
    "email",
    "company",
    "province",
    "city",
    "open_id",
    "union_id",
    "territory",
)
# The keys that identify a lead in ``lead_keys``, in NewLead.dedup_keys' order, so an edit
# claims keys in the order captures do (no deadlocks between the two).
KEY_FIELDS = (KEY_EMAIL, KEY_OPEN_ID, KEY_PHONE)


@dataclass(frozen=True)
class Edit:
    """The profile as it will be stored and what changed (field -> (old, new)); no changes:
    nothing to write."""

    lead: NewLead
    changes: dict[str, tuple[str, str]]

    def key_changes(self) -> list[tuple[str, str, str]]:
        """(kind, old, new) of the changed identity keys, in claiming order."""
        return [(k, *self.changes[k]) for k in KEY_FIELDS if k in self.changes]


def check_mask(paths: Collection[str]) -> None:
    """Every path is an editable Lead field; an empty mask is refused rather than read as
    "change nothing", which would hide a client's mistake."""
    violations = [
        FieldViolation("update_mask", f"unknown or read-only field {path!r}")
        for path in sorted(set(paths))
        if path not in EDITABLE
    ]
    if not paths:
        violations.append(FieldViolation("update_mask", "required: the fields to change"))
    if violations:
        raise InvalidArgument.from_violations(violations, reason="LEAD_INVALID")


def plan_edit(
    *,
    current: Mapping[str, Any],
    patch: Mapping[str, str],
    paths: Collection[str],
    phone_region: str,
) -> Edit:
    """Apply the masked ``paths`` of ``patch`` to the ``current`` row and validate the result
    as a capture would (validate_new_lead: normalisation, a name and a way to reach the
    person), so an edit can never produce a lead a capture would refuse. Only masked fields
    can change: re-normalising a stored value the user did not touch is not an edit."""
    check_mask(paths)
    merged: dict[str, Any] = {
        name: patch.get(name, "") if name in paths else current[name] for name in EDITABLE
    }
    # The source is not editable: validated as the default, so a legacy value cannot block
    # an edit, then put back with the stored values of the unmasked fields.
    valid = validate_new_lead(**merged, source="", phone_region=phone_region)
    kept = {name: current[name] for name in (*EDITABLE, "source") if name not in paths}
    lead = dataclasses.replace(valid, **kept)
    changes = {
        name: (current[name], new)
        for name in EDITABLE
        if name in paths and (new := getattr(lead, name)) != current[name]
    }
    return Edit(lead, changes)


def check_version(*, lead_id: uuid.UUID, version: int, expected_etag: str = "") -> None:
    """The caller's precondition, when it gave one: the etag it read (REST If-Match or
    gRPC lead.etag; quoted, weak or bare; ``*`` matches any)."""
    tag = expected_etag.strip().removeprefix("W/").strip('"')
    if tag not in ("", "*") and tag != etag(lead_id, version):
        raise version_mismatch(lead_id)


def version_mismatch(lead_id: uuid.UUID) -> EtagMismatch:
    return EtagMismatch(
        f"lead {lead_id} changed since it was read; read it again",
        reason="LEAD_VERSION_MISMATCH",
        metadata={"lead": str(lead_id)},
    )
