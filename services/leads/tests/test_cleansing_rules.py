"""The automatic cleansing checks (pure)."""

from __future__ import annotations

import pytest

from crm_leads.lead import cleansing
from crm_leads.lead.rules import NewLead


def lead(**overrides: str) -> NewLead:
    fields = {
        "full_name": "Zhang San",
        "phone": "+8613800138000",
        "email": "zs@example.com",
        "company": "",
        "province": "",
        "city": "Hangzhou",
        "source": "web",
    }
    return NewLead(**{**fields, **overrides})


def test_mobile_real_name_and_a_place_is_verified() -> None:
    assert cleansing.check(lead()) == cleansing.Verdict(cleansing.VERIFIED, "")
    assert cleansing.check(lead(city="", company="Acme")).verification == cleansing.VERIFIED
    assert cleansing.check(lead(city="", province="Zhejiang")).verification == cleansing.VERIFIED


@pytest.mark.parametrize(
    "name", ["test", "TEST ", "asdf", "111", "aaaa", "x", "n/a", "测试", "12345678", "..."]
)
def test_placeholder_names_go_to_review(name: str) -> None:
    verdict = cleansing.check(lead(full_name=name))
    assert verdict == cleansing.Verdict(cleansing.UNVERIFIED, "placeholder name")


@pytest.mark.parametrize("name", ["张三", "Li Lei", "Anna", "O'Brien", "Testa Rossi"])
def test_real_names_are_not_placeholders(name: str) -> None:
    assert not cleansing.is_placeholder_name(name)


def test_the_placeholder_list_is_configurable() -> None:
    assert cleansing.check(lead(full_name="Zhang San"), placeholders={"zhang san"}).note == (
        "placeholder name"
    )
    assert cleansing.check(lead(full_name="test"), placeholders=()).verification == (
        cleansing.VERIFIED
    )


def test_disposable_email_goes_to_review() -> None:
    verdict = cleansing.check(lead(email="x@Mailinator.com"))
    assert verdict == cleansing.Verdict(cleansing.UNVERIFIED, "disposable email domain")


def test_no_mobile_or_no_place_goes_to_review_with_every_reason() -> None:
    landline = cleansing.check(lead(phone="+861062345678"))
    assert landline == cleansing.Verdict(cleansing.UNVERIFIED, "no mobile phone")
    assert cleansing.check(lead(phone="")).note == "no mobile phone"
    verdict = cleansing.check(lead(full_name="asdf", phone="", city=""))
    assert verdict.note == "placeholder name; no mobile phone; no company, province or city"


def test_nothing_is_invalid_automatically() -> None:
    worst = lead(full_name="test", phone="", email="a@yopmail.com", city="")
    assert cleansing.check(worst).verification == cleansing.UNVERIFIED
