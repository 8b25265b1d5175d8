"""Public REST adapter for distribution: the units' rules and profiles, manual and on-demand
automatic distribution, the unplaced leads and a lead's owner history."""

from __future__ import annotations

from datetime import datetime
from typing import Annotated, Any

from fastapi import APIRouter, Body, Depends
from pydantic import Field

from crm_leads.distribution import flows, passup, service, store
from crm_leads.distribution.rules import document_json, parse_profile, parse_rules
from crm_leads.lead.mapping import lead_to_proto
from crm_platform.auth import Principal
from crm_platform.http import ApiModel, CurrentPage, CurrentPrincipal, IdText, paged, proto_json
from crm_platform.ids import parse_id, parse_ids
from crm_platform.protos import timestamp
from crm_platform.runtime import Runtime

Json = dict[str, Any]
Document = Annotated[dict[str, Any], Body()]


class DistributeIn(ApiModel):
    lead_ids: list[IdText] = Field(min_length=1, max_length=service.MAX_MANUAL)
    target_org_unit_id: IdText


class PassUpIn(ApiModel):
    lead_ids: list[IdText] = Field(min_length=1, max_length=service.MAX_MANUAL)
    note: str = Field(default="", max_length=passup.MAX_NOTE, description="Why.")


async def _editor(principal: CurrentPrincipal) -> Principal:
    # A dependency, so a caller without the role gets 403 before the body is validated; which
    # units a manager may edit is checked against the tree.
    principal.require_any(store.EDITOR_ROLES)
    return principal


Editor = Annotated[Principal, Depends(_editor)]


def _time(value: datetime | None) -> str | None:
    return None if value is None else timestamp(value).ToJsonString()


def rules_out(unit_id: str, current: store.StoredRules) -> Json:
    out: Json = {
        "org_unit_id": unit_id,
        "version": current.version,
        "rules": document_json(current.rules),
    }
    if current.create_time is not None:
        out["author"] = current.author
        out["create_time"] = _time(current.create_time)
    return out


def profile_out(unit_id: str, current: store.StoredProfile) -> Json:
    out: Json = {
        "org_unit_id": unit_id,
        "version": current.version,
        "profile": None if current.profile is None else document_json(current.profile),
    }
    if current.update_time is not None:
        out["author"] = current.author
        out["update_time"] = _time(current.update_time)
    return out


def _manual_json(result: service.ManualResult) -> Json:
    if result.lead is not None:
        return {
            "index": result.index,
            "lead_id": result.lead_id,
            "outcome": "DISTRIBUTED",
            "lead": proto_json(lead_to_proto(result.lead)),
        }
    error = result.error
    assert error is not None
    return {
        "index": result.index,
        "lead_id": result.lead_id,
        "outcome": "FAILED",
        "error": {"code": error.http_status, "reason": error.reason, "message": error.message},
    }


def history_json(row: Any) -> Json:
    return {
        "id": str(row.id),
        "from_org_id": str(row.from_org_id),
        "from_org_path": row.from_org_path,
        "to_org_id": str(row.to_org_id),
        "to_org_path": row.to_org_path,
        "reason": row.reason,
        "rule_name": row.rule_name,
        "actor": row.actor,
        "occur_time": _time(row.occur_time),
    }


def unmatched_json(row: Any) -> Json:
    return {
        "lead_id": str(row.id),
        "rule_name": row.rule_name,
        "reason": row.reason,
        "decide_time": _time(row.decide_time),
    }


def router(rt: Runtime) -> APIRouter:
    r = APIRouter(tags=["distribution"])
    # Paths of their own, not under the directory's /v1/org-units: a gateway routes by
    # prefix, and every public prefix belongs to exactly one service.
    rules = "/v1/distribution-rules/{unit_id}"
    profiles = "/v1/distribution-profiles/{unit_id}"

    @r.get(rules)
    async def get_distribution_rules(unit_id: str, principal: CurrentPrincipal) -> Json:
        """The unit's current distribution rules (version 0 with no rules: the unit does not
        distribute automatically and keeps the leads it collects)."""
        uid = parse_id(unit_id, "unit_id")
        async with rt.db.read() as conn:
            unit = await store.visible_unit(conn=conn, principal=principal, unit_id=uid)
            current = await store.get_rules(conn=conn, unit=unit)
        return rules_out(str(uid), current)

    @r.put(rules)
    async def put_distribution_rules(unit_id: str, body: Document, principal: Editor) -> Json:
        """Replace the unit's rules (administrators, managers above the unit): stored as the
        next version; every target must be a child of the unit. ``{"rules": []}`` turns
        automatic distribution off."""
        uid = parse_id(unit_id, "unit_id")
        rules = parse_rules(body)
        return rules_out(str(uid), await flows.store_rules(rt.db, principal, uid, rules))

    @r.get(profiles)
    async def get_distribution_profile(unit_id: str, principal: CurrentPrincipal) -> Json:
        """The unit's profile as a target of its parent's rules (version 0, no profile: it is
        not a target)."""
        uid = parse_id(unit_id, "unit_id")
        async with rt.db.read() as conn:
            unit = await store.visible_unit(conn=conn, principal=principal, unit_id=uid)
            current = await store.get_profile(conn=conn, unit=unit)
        return profile_out(str(uid), current)

    @r.put(profiles)
    async def put_distribution_profile(unit_id: str, body: Document, principal: Editor) -> Json:
        """Replace the unit's profile (administrators, managers above its parent)."""
        uid = parse_id(unit_id, "unit_id")
        profile = parse_profile(body)
        return profile_out(str(uid), await flows.store_profile(rt.db, principal, uid, profile))

    @r.post(rules + ":run")
    async def distribute_pool(unit_id: str, principal: Editor) -> Json:
        """Run the unit's automatic rules over its pool now (open, unassigned leads it owns),
        cascading through children with automatic rules; in batches, each its own
        transaction. Counts of leads moved, left unmatched, and moved per final owner."""
        uid = parse_id(unit_id, "unit_id")
        return (await service.run(rt.db, principal=principal, unit_id=uid)).json()

    @r.get(rules + "/unmatched-leads")
    async def unmatched_leads(unit_id: str, principal: CurrentPrincipal, page: CurrentPage) -> Json:
        """Leads the unit's rules could not place, still in its pool, newest first."""
        uid = parse_id(unit_id, "unit_id")
        async with rt.db.read() as conn:
            rows = await service.unmatched_page(
                conn=conn, principal=principal, unit_id=uid, page=page
            )
        return paged("leads", rows, page, unmatched_json)

    @r.post("/v1/leads:distribute", tags=["leads"])
    async def distribute_leads(body: DistributeIn, principal: Editor) -> Json:
        """Manual distribution: up to 1,000 leads of the target's parent pool to the target
        (one level down). One result per lead, in order: ``DISTRIBUTED`` with the lead, or
        ``FAILED`` with the reason; a failed lead never blocks the others."""
        ids = parse_ids(body.lead_ids, "lead_ids")
        target = parse_id(body.target_org_unit_id, "target_org_unit_id")
        results = await flows.distribute_manually(rt.db, principal, ids, target)
        return {"results": [_manual_json(x) for x in results]}

    @r.post("/v1/leads:passUp", tags=["leads"])
    async def pass_up_leads(body: PassUpIn, principal: Editor) -> Json:
        """Hands up to 1,000 leads of their owner units' pools to each owner's parent (one
        level up): the way a lead a unit collected leaves it. Results as for
        ``:distribute``; the unit left is never offered the lead again."""
        ids = parse_ids(body.lead_ids, "lead_ids")
        results = await flows.pass_up(rt.db, principal, ids, body.note)
        return {"results": [_manual_json(x) for x in results]}

    @r.get("/v1/leads/{lead_id}/owner-history", tags=["leads"])
    async def owner_history(lead_id: str, principal: CurrentPrincipal, page: CurrentPage) -> Json:
        """The org units a visible lead moved between, newest first."""
        async with rt.db.read() as conn:
            rows = await service.owner_history_page(
                conn=conn, principal=principal, lead_id=parse_id(lead_id, "lead_id"), page=page
            )
        return paged("moves", rows, page, history_json)

    return r
