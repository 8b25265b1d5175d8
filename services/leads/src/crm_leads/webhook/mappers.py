"""Platform payloads -> one lead schema (pure, no I/O).

Each platform has one small mapper turning its JSON payload into the arguments of
``validate_new_lead`` and ``validate_intent`` plus, per argument, the payload field it came
from, so every violation names the field the sender has to fix. Adding a platform is one
function and one entry in ``MAPPERS``."""

from __future__ import annotations

import json
from collections.abc import Callable, Collection, Mapping
from dataclasses import dataclass, field
from itertools import islice
from typing import Any

import grpc

from crm_leads.lead.rules import NewIntent, NewLead, validate_intent, validate_new_lead
from crm_platform.errors import DomainError, FieldViolation, InvalidArgument
from crm_platform.validation import unstorable_paths

PAYLOAD_INVALID = "WEBHOOK_PAYLOAD_INVALID"
# Longer than any lead field may be (the lead rules then apply their own limits), short
# enough that a hostile payload cannot make a violation message huge.
MAX_VALUE = 254
_LEAD_ARGS = ("full_name", "phone", "email", "company", "province", "city", "open_id", "union_id")
_INTENT_ARGS = ("campaign", "product_interest")


class MalformedPayload(DomainError):
    """The body is not JSON at all: 400 like any malformed REST body, not 422."""

    grpc_code = grpc.StatusCode.INVALID_ARGUMENT
    http_status = 400
    title = "Malformed JSON"
    default_reason = "MALFORMED_JSON"


@dataclass(frozen=True)
class Mapped:
    """A payload in the lead schema. ``values`` is keyed by the lead rules' field names
    (``full_name``, ``phone``, …, ``intent.campaign``); ``fields`` maps those names back to
    the payload's."""

    source: str
    values: dict[str, str]
    fields: dict[str, str]
    # The platform's own id for this enquiry, when it has one: retries of the same enquiry
    # carry it even when the platform re-serialises the body.
    event_id: str = ""
    violations: list[FieldViolation] = field(default_factory=list)


Mapper = Callable[[Mapping[str, Any]], Mapped]


class _Reader:
    """Reads string fields of one JSON object, collecting every violation (unknown fields
    first), so a sender fixes its payload in one round trip."""

    def __init__(self, obj: Mapping[str, Any], known: Collection[str], prefix: str = "") -> None:
        self._obj = obj
        self._prefix = prefix
        self.violations = [
            FieldViolation(prefix + key, "unknown field") for key in obj if key not in known
        ]

    def text(self, key: str) -> str:
        value = self._obj.get(key)
        if value is None:
            return ""
        if not isinstance(value, str):
            self.violations.append(FieldViolation(self._prefix + key, "must be a string"))
            return ""
        if len(value) > MAX_VALUE:
            self.violations.append(
                FieldViolation(self._prefix + key, f"at most {MAX_VALUE} characters")
            )
            return ""
        return value


def _flat(payload: Mapping[str, Any], names: Mapping[str, str], source: str) -> Mapped:
    """A payload whose fields map one to one onto the lead schema (``names``: ours ->
    theirs)."""
    reader = _Reader(payload, names.values())
    values = {ours: reader.text(theirs) for ours, theirs in names.items()}
    return Mapped(source, values, dict(names), violations=reader.violations)


GENERIC_FIELDS = {
    "full_name": "name",
    "phone": "phone",
    "email": "email",
    "company": "company",
    "province": "province",
    "city": "city",
    "intent.campaign": "campaign",
    "intent.product_interest": "product",
}


def generic(payload: Mapping[str, Any]) -> Mapped:
    """Our own JSON form: ``{"name", "phone", "email", "company", "province", "city",
    "campaign", "product"}``."""
    return _flat(payload, GENERIC_FIELDS, source="webhook")


WECHAT_FIELDS = {
    "open_id": "openid",
    "union_id": "unionid",
    "full_name": "nickname",
    "phone": "mobile",
    "province": "province",
    "city": "city",
    "intent.campaign": "scene",
}


def wechat(payload: Mapping[str, Any]) -> Mapped:
    """A WeChat official-account / mini-program form: the follower's ids and profile, and
    the QR-code ``scene`` that brought them (our campaign)."""
    return _flat(payload, WECHAT_FIELDS, source="wechat")


# Ids the platform sends along; accepted (and type-checked) but not kept.
AD_INFO_KEYS = ("campaign_id", "ad_id", "adgroup_id", "form_id")
AD_FORM_FIELDS = {
    "full_name": "full_name",
    "phone": "phone_number",
    "email": "email",
    "company": "company_name",
    "province": "province",
    "city": "city",
    "intent.product_interest": "product_interest",
}


def ad_platform(payload: Mapping[str, Any]) -> Mapped:
    """An ad platform's lead form (Douyin / Facebook lead-ads style): ``{"lead_id",
    "campaign_name", "ad_id", …, "field_data": [{"name": "phone_number", "values":
    ["…"]}, …]}``. ``lead_id`` is the platform's id of the enquiry."""
    top = _Reader(payload, ("lead_id", "campaign_name", *AD_INFO_KEYS, "field_data"))
    lead_id, campaign = top.text("lead_id"), top.text("campaign_name")
    for key in AD_INFO_KEYS:
        top.text(key)
    if not lead_id:
        top.violations.append(FieldViolation("lead_id", "required"))
    answers = _answers(payload.get("field_data"), top.violations)
    form = _Reader(answers, AD_FORM_FIELDS.values(), prefix="field_data.")
    values = {ours: form.text(theirs) for ours, theirs in AD_FORM_FIELDS.items()}
    values["intent.campaign"] = campaign
    fields = {ours: f"field_data.{theirs}" for ours, theirs in AD_FORM_FIELDS.items()}
    fields["intent.campaign"] = "campaign_name"
    return Mapped("ad_platform", values, fields, lead_id, top.violations + form.violations)


def _answers(field_data: Any, violations: list[FieldViolation]) -> dict[str, Any]:
    """``[{"name": n, "values": [v, …]}, …]`` as ``{n: "v, …"}`` (several values, as a
    multiple-choice answer has, are joined)."""
    if field_data is None:
        violations.append(FieldViolation("field_data", "required"))
        return {}
    if not isinstance(field_data, list):
        violations.append(FieldViolation("field_data", 'a list of {"name", "values"}'))
        return {}
    answers: dict[str, Any] = {}
    for index, item in enumerate(field_data):
        name = item.get("name") if isinstance(item, dict) else None
        values = item.get("values") if isinstance(item, dict) else None
        if (
            not isinstance(name, str)
            or not isinstance(values, list)
            or not all(isinstance(v, str) for v in values)
        ):
            violations.append(
                FieldViolation(f"field_data[{index}]", '{"name": string, "values": [string]}')
            )
        elif name in answers:
            violations.append(FieldViolation(f"field_data.{name}", "given more than once"))
        else:
            answers[name] = ", ".join(values)
    return answers


MAPPERS: dict[str, Mapper] = {
    "generic": generic,
    "wechat": wechat,
    "ad_platform": ad_platform,
}


def parse_json(body: bytes) -> Any:
    try:
        return json.loads(body)
    except (ValueError, RecursionError) as exc:  # RecursionError: absurdly deep nesting
        raise MalformedPayload(
            "request body is not valid JSON",
            violations=[FieldViolation("body", "not valid JSON")],
        ) from exc


def to_capture(platform: str, payload: Any, *, region: str) -> tuple[NewLead, NewIntent, str]:
    """The validated lead and intent of a parsed payload, and the platform's event id ('' if
    it has none). Every violation names the payload field."""
    if not isinstance(payload, dict):
        raise InvalidArgument.from_violations(
            [FieldViolation("body", "must be a JSON object")], reason=PAYLOAD_INVALID
        )
    # Before any mapping: an event id is hashed, and no lone surrogate can be encoded.
    unstorable = [FieldViolation(*found) for found in islice(unstorable_paths(payload), 20)]
    if unstorable:
        raise InvalidArgument.from_violations(unstorable, reason=PAYLOAD_INVALID)
    mapped = MAPPERS[platform](payload)
    if mapped.violations:
        raise InvalidArgument.from_violations(mapped.violations, reason=PAYLOAD_INVALID)
    violations: list[FieldViolation] = []
    lead: NewLead | None = None
    intent: NewIntent | None = None
    profile: dict[str, Any] = {name: mapped.values.get(name, "") for name in _LEAD_ARGS}
    try:
        lead = validate_new_lead(phone_region=region, source=mapped.source, **profile)
    except InvalidArgument as exc:
        violations += exc.violations
    try:
        intent = validate_intent(
            source=mapped.source,
            **{name: mapped.values.get(f"intent.{name}", "") for name in _INTENT_ARGS},
        )
    except InvalidArgument as exc:
        violations += exc.violations
    if lead is None or intent is None:
        renamed = [
            FieldViolation(mapped.fields.get(v.field, v.field), v.description) for v in violations
        ]
        raise InvalidArgument.from_violations(renamed, reason="LEAD_INVALID")
    return lead, intent, mapped.event_id
