"""Public REST adapter for leads."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Annotated, Any, Literal

from fastapi import APIRouter, Depends, Header, Query, Response
from pydantic import ConfigDict, Field

from crm_leads.lead import flows, pools, review, rules, service
from crm_leads.lead.mapping import lead_to_proto, lead_with_intents
from crm_leads.scoring import flows as scoring_flows
from crm_leads.scoring import service as scoring_service
from crm_leads.scoring.rules import ScoringRules, rules_json
from crm_leads.settings import Settings
from crm_leads.tenantsettings import service as tenant_settings
from crm_platform.auth import ROLE_ADMIN, Principal
from crm_platform.errors import InvalidArgument
from crm_platform.http import ApiModel, CurrentPage, CurrentPrincipal, IdText, paged, proto_json
from crm_platform.ids import parse_id
from crm_platform.pagination import MAX_PAGE_SIZE, PageRequest, page_of, page_request
from crm_platform.protos import etag
from crm_platform.runtime import Runtime
from crm_platform.validation import clean_text

Json = dict[str, Any]
OUTCOME_HEADER = "Crm-Capture-Outcome"


class IntentIn(ApiModel):
    campaign: str = Field(default="", max_length=200)
    product_interest: str = Field(default="", max_length=200)


class LeadIn(ApiModel):
    full_name: str = Field(max_length=200)
    phone: str = Field(default="", max_length=40)
    email: str = Field(default="", max_length=254)
    company: str = Field(default="", max_length=200)
    province: str = Field(default="", max_length=100)
    city: str = Field(default="", max_length=100)
    source: str = Field(default="api", max_length=32)
    open_id: str = Field(default="", max_length=64)
    union_id: str = Field(default="", max_length=64)
    territory: str = Field(default="", max_length=64, description="Sales-territory code.")
    custom_fields: dict[str, Annotated[str, Field(max_length=200)]] = Field(
        default_factory=dict,
        max_length=20,
        description="Custom attributes distribution rules can match (key -> value).",
    )
    intent: IntentIn = IntentIn()


class LeadPatchIn(ApiModel):
    """JSON merge patch (RFC 7396) of a lead's profile: the keys present are the update mask;
    `null` or "" clears a field."""

    # Other keys are allowed here only to reach the update-mask check, which names each
    # unknown or read-only field (status, owner ...) the same way as gRPC does.
    model_config = ConfigDict(extra="allow", str_strip_whitespace=True)

    full_name: str | None = Field(default=None, max_length=200)
    phone: str | None = Field(default=None, max_length=40)
    email: str | None = Field(default=None, max_length=254)
    company: str | None = Field(default=None, max_length=200)
    province: str | None = Field(default=None, max_length=100)
    city: str | None = Field(default=None, max_length=100)
    open_id: str | None = Field(default=None, max_length=64)
    union_id: str | None = Field(default=None, max_length=64)
    territory: str | None = Field(default=None, max_length=64)

    def mask(self) -> set[str]:
        return {*self.model_fields_set, *(self.model_extra or {})}

    def patch(self) -> dict[str, str]:
        return {name: getattr(self, name) or "" for name in self.model_fields_set}


class DecisionIn(ApiModel):
    decision: Literal["VERIFIED", "INVALID"]
    note: str = Field(default="", max_length=1000)


class BatchItemIn(LeadIn):
    request_id: IdText = ""


class BatchIn(ApiModel):
    leads: list[BatchItemIn] = Field(min_length=1, max_length=flows.MAX_BATCH)


def _validated(body: LeadIn, region: str) -> tuple[rules.NewLead, rules.NewIntent]:
    fields = body.model_dump(exclude={"intent", "request_id"})
    lead = rules.validate_new_lead(phone_region=region, **fields)
    intent = rules.validate_intent(source=lead.source, **body.intent.model_dump())
    return lead, intent


def _item(body: BatchItemIn, region: str) -> flows.CaptureRequest:
    try:
        lead, intent = _validated(body, region)
        request_id = parse_id(body.request_id, "request_id") if body.request_id else None
    except InvalidArgument as exc:
        return flows.CaptureRequest(None, None, None, exc.violations)
    return flows.CaptureRequest(lead, intent, request_id)


@dataclass(frozen=True)
class PoolQuery:
    filter: pools.PoolFilter
    page: PageRequest


async def pool_query(
    grade: Annotated[list[str] | None, Query(description="A, B, C or D; repeatable.")] = None,
    source: Annotated[str, Query(max_length=32)] = "",
    province: Annotated[str, Query(max_length=100)] = "",
    city: Annotated[str, Query(max_length=100)] = "",
    min_age_days: Annotated[int | None, Query(ge=0, le=36500)] = None,
    max_age_days: Annotated[int | None, Query(ge=0, le=36500)] = None,
    page_size: Annotated[int, Query(ge=1, le=MAX_PAGE_SIZE)] = 50,
    page_token: str = "",
) -> PoolQuery:
    # The filter is validated first, and the page token is bound to it: a token from
    # another filter (or another list) is a violation, never a silently wrong page.
    flt = pools.PoolFilter(
        grades=tuple(sorted({g.strip().upper() for g in grade or ()})),
        source=source.strip(),
        province=province.strip(),
        city=city.strip(),
        min_age_days=min_age_days,
        max_age_days=max_age_days,
    )
    return PoolQuery(flt, page_request(page_size, page_token, flt.key()))


def router(rt: Runtime) -> APIRouter:
    assert isinstance(rt.settings, Settings)
    default_region = rt.settings.default_phone_region
    captures = flows.captures(rt.extras, rt.db)
    r = APIRouter(prefix="/v1/leads", tags=["leads"])

    @r.post("", status_code=201)
    async def create_lead(
        body: LeadIn,
        principal: CurrentPrincipal,
        response: Response,
        idempotency_key: Annotated[str | None, Header()] = None,
    ) -> Json:
        """Capture a lead owned by the caller's org unit. A lead with the same phone, email
        or WeChat open_id absorbs it as a new intent instead (200, `Crm-Capture-Outcome:
        merged`); if that lead is outside the caller's subtree the answer is 202 without
        it. `Idempotency-Key` (a UUID) makes retries return the first result."""
        region = await tenant_settings.phone_region(rt.db, principal.tenant_id, default_region)
        lead, intent = _validated(body, region)
        request_id = parse_id(idempotency_key, "Idempotency-Key") if idempotency_key else None
        captured, intents = await captures.capture(principal, lead, intent, request_id)
        response.headers[OUTCOME_HEADER] = captured.outcome.name.lower()
        if captured.outcome is service.Outcome.MERGED:
            response.status_code = 200 if captured.visible else 202
            if not captured.visible:
                return {"outcome": "MERGED", "lead": None}
        return proto_json(lead_with_intents(captured.lead, intents, captured.message))

    @r.post(":batchCreate")
    async def batch_create_leads(body: BatchIn, principal: CurrentPrincipal) -> Json:
        """Up to 1,000 leads; one result per item, in order (`CREATED`, `MERGED` or
        `REJECTED` with field violations). A rejected item never blocks the others."""
        region = await tenant_settings.phone_region(rt.db, principal.tenant_id, default_region)
        items = [_item(item, region) for item in body.leads]
        results = await flows.capture_batch(rt.db, principal, items)
        return {"results": [_result_json(x) for x in results]}

    @r.get("")
    async def list_leads(
        principal: CurrentPrincipal,
        page_size: Annotated[int, Query(ge=1, le=1000)] = 50,
        page_token: str = "",
    ) -> Json:
        page = page_request(page_size, page_token)
        async with rt.db.read() as conn:
            rows = await service.list_visible(conn=conn, principal=principal, page=page)
        items, token = page_of(rows, page)
        return {"leads": [proto_json(lead_to_proto(x)) for x in items], "next_page_token": token}

    @r.get(":review")
    async def review_queue(
        principal: Annotated[Principal, Depends(_reviewer)],
        page_size: Annotated[int, Query(ge=1, le=1000)] = 50,
        page_token: str = "",
    ) -> Json:
        """UNVERIFIED open leads of the caller's subtree, oldest first (managers and
        administrators); each with the note saying why the automatic checks did not verify
        it."""
        page = page_request(page_size, page_token, review.REVIEW_FILTER)
        async with rt.db.read() as conn:
            rows = await review.review_page(conn=conn, principal=principal, page=page)
        items, token = page_of(rows, page, review.REVIEW_FILTER)
        return {
            "reviews": [
                {"lead": proto_json(lead_to_proto(x)), "note": x.verification_note} for x in items
            ],
            "next_page_token": token,
        }

    @r.post("/{lead_id}:verify")
    async def verify_lead(
        lead_id: str, body: DecisionIn, principal: Annotated[Principal, Depends(_reviewer)]
    ) -> Json:
        """Decide on a lead from the review queue: `VERIFIED`, or `INVALID` (which closes it
        with `closed_reason` "invalid"). Publishes `crm.leads.lead.verified.v1`, and
        `crm.leads.lead.closed.v1` when invalid; a second decision is 409
        `LEAD_ALREADY_REVIEWED`."""
        async with rt.db.unit_of_work() as conn:
            row = await review.decide(
                conn=conn,
                principal=principal,
                lead_id=parse_id(lead_id, "lead_id"),
                decision=review.DECISIONS[body.decision],
                note=clean_text(body.note),
            )
        return {"lead": proto_json(lead_to_proto(row)), "note": row.verification_note}

    @r.get("/{lead_id}")
    async def get_lead(lead_id: str, principal: CurrentPrincipal) -> Json:
        async with rt.db.read() as conn:
            row = await service.get(
                conn=conn, principal=principal, lead_id=parse_id(lead_id, "lead_id")
            )
            intents = await service.intents_of(conn=conn, lead_id=row.id)
        return proto_json(lead_to_proto(row, intents))

    @r.post("/{lead_id}:rescore")
    async def rescore_lead(lead_id: str, principal: CurrentPrincipal) -> Json:
        """Score the lead again with the tenant's current rules; publishes
        `crm.leads.lead.scored.v1` if its score or grade changed."""
        async with rt.db.unit_of_work() as conn:
            rescored = await service.rescore(
                conn=conn, principal=principal, lead_id=parse_id(lead_id, "lead_id")
            )
        return {
            "lead": proto_json(lead_to_proto(rescored.lead)),
            "reasons": rescored.reasons,
            "rules_version": rescored.rules_version,
        }

    _update_route(r, rt, default_region)
    return r


def _update_route(r: APIRouter, rt: Runtime, default_region: str) -> None:
    """PATCH /v1/leads/{lead_id}: a function of its own to keep ``router`` simple."""

    @r.patch("/{lead_id}")
    async def update_lead(
        lead_id: str,
        body: LeadPatchIn,
        principal: CurrentPrincipal,
        response: Response,
        if_match: Annotated[str, Header(description="The etag read; a stale one gives 409.")] = "",
    ) -> Json:
        """Edit an open lead's profile: the body's keys (`full_name`, `phone`, `email`,
        `company`, `province`, `city`, `open_id`, `union_id`) are the fields to change,
        validated and normalised as on capture. Every change is recorded in the lead's
        history and published as `crm.leads.lead.updated.v1`. A phone, email or open_id of
        another lead is 409 `LEAD_DUPLICATE`, a stale `If-Match` 409
        `LEAD_VERSION_MISMATCH`, a closed or converted lead 409 `LEAD_NOT_OPEN`."""
        region = await tenant_settings.phone_region(rt.db, principal.tenant_id, default_region)
        async with rt.db.unit_of_work() as conn:
            row = await service.update(
                conn=conn,
                principal=principal,
                lead_id=parse_id(lead_id, "lead_id"),
                patch=body.patch(),
                paths=body.mask(),
                phone_region=region,
                expected_etag=if_match,
            )
            intents = await service.intents_of(conn=conn, lead_id=row.id)
        response.headers["ETag"] = f'"{etag(row.id, row.version)}"'
        return proto_json(lead_to_proto(row, intents))


async def _admin(principal: CurrentPrincipal) -> Principal:
    # A dependency, so a non-administrator gets 403 before the body is validated.
    principal.require_any([ROLE_ADMIN])
    return principal


async def _reviewer(principal: CurrentPrincipal) -> Principal:
    principal.require_any(review.REVIEWER_ROLES)
    return principal


def pool_router(rt: Runtime) -> APIRouter:
    """Lead pools (公海): the caller's pool, its held leads, claim and release."""
    r = APIRouter(prefix="/v1/leads", tags=["pools"])

    @r.get(":pool")
    async def lead_pool(
        principal: CurrentPrincipal, query: Annotated[PoolQuery, Depends(pool_query)]
    ) -> Json:
        """Open leads of the caller's subtree that nobody holds, newest first, filtered by
        grade, source, province, city and age in whole days since capture."""
        async with rt.db.read() as conn:
            rows = await pools.pool_page(
                conn=conn, principal=principal, flt=query.filter, page=query.page
            )
        items, token = page_of(rows, query.page, query.filter.key())
        return {"leads": [proto_json(lead_to_proto(x)) for x in items], "next_page_token": token}

    @r.get(":mine")
    async def my_leads(principal: CurrentPrincipal, page: CurrentPage) -> Json:
        """Open leads the caller holds, newest first."""
        async with rt.db.read() as conn:
            rows = await pools.mine_page(conn=conn, principal=principal, page=page)
        return paged("leads", rows, page, lambda x: proto_json(lead_to_proto(x)))

    @r.post("/{lead_id}:claim")
    async def claim_lead(lead_id: str, principal: CurrentPrincipal) -> Json:
        """Take a lead from the caller's pool (users only). Publishes
        `crm.leads.lead.claimed.v1`; a lead already held or not open is 409
        `LEAD_NOT_IN_POOL`."""
        async with rt.db.unit_of_work() as conn:
            row = await pools.claim(
                conn=conn, principal=principal, lead_id=parse_id(lead_id, "lead_id")
            )
        return proto_json(lead_to_proto(row))

    @r.post("/{lead_id}:release")
    async def release_lead(lead_id: str, principal: CurrentPrincipal) -> Json:
        """Return a held lead to its pool: its holder, or a manager or administrator of the
        subtree taking it back. Publishes `crm.leads.lead.released.v1`; a lead nobody holds
        is 409 `LEAD_NOT_CLAIMED`, another rep's lead 403 `LEAD_HELD_BY_OTHER`."""
        async with rt.db.unit_of_work() as conn:
            row = await pools.release(
                conn=conn, principal=principal, lead_id=parse_id(lead_id, "lead_id")
            )
        return proto_json(lead_to_proto(row))

    return r


def scoring_router(rt: Runtime) -> APIRouter:
    r = APIRouter(prefix="/v1/scoring-rules", tags=["scoring"])

    @r.get("")
    async def get_scoring_rules(principal: CurrentPrincipal) -> Json:
        """The tenant's current scoring rules, or the built-in default as version 0."""
        async with rt.db.read() as conn:
            current = await scoring_service.latest(conn=conn, tenant_id=principal.tenant_id)
        return {"version": current.version, "rules": rules_json(current.rules)}

    @r.put("")
    async def put_scoring_rules(
        body: ScoringRules, principal: Annotated[Principal, Depends(_admin)]
    ) -> Json:
        """Replace the tenant's scoring rules (tenant administrators): stored as the next
        version, used by captures from now on. Existing leads keep their score until a repeat
        enquiry or `:rescore`."""
        current = await scoring_flows.store_rules(rt.db, principal, body)
        return {"version": current.version, "rules": rules_json(current.rules)}

    return r


def _result_json(result: flows.ItemResult) -> Json:
    if result.captured is None:
        return {
            "index": result.index,
            "outcome": "REJECTED",
            "violations": [
                {"field": v.field, "description": v.description} for v in result.violations
            ],
        }
    captured = result.captured
    lead = proto_json(lead_to_proto(captured.lead)) if captured.visible else None
    return {"index": result.index, "outcome": captured.outcome.name, "lead": lead}
