"""Pure platform pieces: event envelope, namespaces, page tokens."""

from __future__ import annotations

import uuid

import pytest

from crm.leads.v1 import events_pb2, lead_pb2
from crm.sales.v1 import events_pb2 as sales_events
from crm_platform.errors import InvalidArgument
from crm_platform.events import (
    STREAMS,
    SUBJECTS,
    Namespace,
    PoisonMessage,
    build_event,
    parse_event,
)
from crm_platform.pagination import clamp_page_size, decode_token, encode_token, page_request


def test_envelope_round_trip() -> None:
    tenant = uuid.uuid4()
    payload = events_pb2.LeadCreated(lead=lead_pb2.Lead(id="x", full_name="Li"))
    env = build_event(
        event_type="crm.leads.lead.created.v1",
        payload=payload,
        tenant_id=tenant,
        org_path="/acme/east/",
        producer="leads",
        causation_id="req-1",
    )
    got = parse_event(env.SerializeToString())
    assert got.tenant_id == tenant
    assert got.envelope.correlation_id == env.id  # a flow starts with its own id
    assert got.envelope.causation_id == "req-1"
    assert got.payload == payload


def test_payload_must_match_subject() -> None:
    with pytest.raises(TypeError):
        build_event(
            event_type="crm.leads.lead.created.v1",
            payload=sales_events.OpportunityCreated(),
            tenant_id=uuid.uuid4(),
            org_path="/a/",
            producer="leads",
        )


@pytest.mark.parametrize("data", [b"garbage \xff", b""])
def test_undecodable_message_is_poison(data: bytes) -> None:
    with pytest.raises(PoisonMessage):
        parse_event(data)


# Event names issue 4 fixes as they are (the product's vocabulary), though not a verb.
NAMED_BY_THE_PRODUCT = {"sla_warning"}
IRREGULAR_PAST = {"undone"}


def test_every_subject_follows_the_naming_rule() -> None:
    for subject in SUBJECTS:
        parts = subject.split(".")
        assert parts[0] == "crm" and parts[-1] == "v1" and len(parts) == 5, subject
        if parts[1] == "cmd":  # crm.cmd.<domain>.<action>.v1: commands are imperative
            assert parts[2] in STREAMS and parts[2] != "cmd", subject
            continue
        verb = parts[3]
        past = verb.endswith("ed") or verb.split("_")[0].endswith("ed")  # followed_up
        assert past or verb in NAMED_BY_THE_PRODUCT | IRREGULAR_PAST, (
            f"{subject}: verbs are past tense"
        )


def test_namespace_prefixes_subjects_and_streams() -> None:
    ns = Namespace("t1")
    assert ns.subject("crm.leads.lead.created.v1") == "t1.crm.leads.lead.created.v1"
    assert ns.event_type("t1.crm.leads.lead.created.v1") == "crm.leads.lead.created.v1"
    assert ns.stream("CRM_LEADS") == "T1_CRM_LEADS"
    assert ns.stream_for("crm.servicedesk.ticket.created.v1") == "T1_CRM_SERVICEDESK"
    assert ns.dlq_subject("crm.leads.lead.created.v1") == "t1.crm.dlq.crm.leads.lead.created.v1"
    assert Namespace().subject("crm.x.y.z.v1") == "crm.x.y.z.v1"


def test_page_token_round_trip_and_tampering() -> None:
    last = uuid.uuid4()
    token = encode_token(last, "status=new")
    assert decode_token(token, "status=new") == last
    with pytest.raises(InvalidArgument) as other_query:
        decode_token(token, "status=closed")
    assert other_query.value.violations[0].field == "page_token"
    with pytest.raises(InvalidArgument):
        decode_token("not-a-token", "")


def test_page_size_is_clamped() -> None:
    assert clamp_page_size(0) == 50
    assert clamp_page_size(-5) == 50
    assert clamp_page_size(5000) == 1000
    assert page_request(10, "").size == 10
