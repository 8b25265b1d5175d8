"""The lead rules every capture path shares (REST, gRPC, webhooks, files)."""

from __future__ import annotations

import pytest

from crm_leads.lead.rules import NewLead, validate_intent, validate_new_lead
from crm_platform.errors import InvalidArgument
from crm_platform.validation import NUL_MESSAGE, SURROGATE_MESSAGE


def _lead(**fields: str) -> NewLead:
    given = {"full_name": "张三", "phone": "13800138000", "email": "", "company": ""}
    return validate_new_lead(
        **{**given, **fields}, province="", city="", source="web", phone_region="CN"
    )


def test_text_that_cannot_be_stored_is_each_fields_error() -> None:
    with pytest.raises(InvalidArgument) as caught:
        _lead(full_name="张\x00三", company="Acme\ud800")
    assert caught.value.reason == "LEAD_INVALID"
    assert [(v.field, v.description) for v in caught.value.violations] == [
        ("full_name", NUL_MESSAGE),
        ("company", SURROGATE_MESSAGE),
    ]
    with pytest.raises(InvalidArgument) as caught:
        validate_intent(source="web", campaign="\udc00", product_interest="")
    assert [v.field for v in caught.value.violations] == ["intent.campaign"]


def test_non_ascii_text_is_stored() -> None:
    lead = _lead(full_name="张三 😀", company="阿里巴巴")
    assert (lead.full_name, lead.company) == ("张三 😀", "阿里巴巴")
