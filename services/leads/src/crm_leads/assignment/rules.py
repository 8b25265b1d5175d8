"""Assignment (分配) inside an org unit, manager → rep: the unit's policy document, validated,
and the pure planner that gives pool leads to reps by the policy's strategy under the private
pool cap. No I/O.

Strategies: ``round_robin`` (weighted: a rep of weight 3 gets three turns per round),
``load_based`` (the rep holding the fewest open leads), ``skill`` (reps whose skills or
product lines include the lead's product interest; generalists, who list none, when no
specialist matches; then the least loaded), ``manual`` (no automatic runs)."""

from __future__ import annotations

import heapq
import uuid
from collections import Counter
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Annotated, Any, Literal

from pydantic import AfterValidator, ConfigDict, Field, ValidationError, model_validator
from pydantic_core import PydanticCustomError

from crm_platform.errors import FieldViolation, InvalidArgument, loc_to_field
from crm_platform.validation import InputModel

MAX_REPS = 5000
MAX_WEIGHT = 100

Strategy = Literal["round_robin", "load_based", "skill", "manual"]
Code = Annotated[str, Field(min_length=1, max_length=64)]


def _user_id(value: str) -> str:
    try:
        return str(uuid.UUID(value))
    except ValueError:
        raise PydanticCustomError("user_id", "must be a user id (a UUID)") from None


UserId = Annotated[str, AfterValidator(_user_id)]

# Why a lead stays in the pool after a run.
LEFT_ALL_FULL = "ALL_REPS_FULL"
LEFT_NO_MATCH = "NO_MATCHING_REP"
LEFT_NO_REPS = "NO_ELIGIBLE_REPS"


class _Document(InputModel):
    # Strict and closed, as the distribution documents: a misspelt key is an error.
    model_config = ConfigDict(extra="forbid", frozen=True, strict=True, str_strip_whitespace=True)


class Rep(_Document):
    user_id: UserId
    # Codes matched against a lead's product interest (skill strategy); empty: a generalist.
    skills: list[Code] = Field(default_factory=list, max_length=100)
    product_lines: list[Code] = Field(default_factory=list, max_length=200)
    weight: Annotated[int, Field(ge=1, le=MAX_WEIGHT)] = 1
    # False: kept in the document but given no leads (e.g. on leave).
    active: bool = True


class AssignmentPolicy(_Document):
    schema_version: Literal[1] = 1
    strategy: Strategy = "manual"
    reps: list[Rep] = Field(default_factory=list, max_length=MAX_REPS)

    @model_validator(mode="after")
    def _unique_reps(self) -> AssignmentPolicy:
        seen: set[uuid.UUID] = set()
        for i, rep in enumerate(self.reps):
            uid = uuid.UUID(rep.user_id)
            if uid in seen:
                raise PydanticCustomError(
                    "duplicate_rep", "listed twice", {"field": f"reps.{i}.user_id"}
                )
            seen.add(uid)
        return self


def parse_policy(document: object) -> AssignmentPolicy:
    """The validated policy, or InvalidArgument naming every bad field (``reps.1.weight``)."""
    try:
        return AssignmentPolicy.model_validate(document)
    except ValidationError as exc:
        violations = [
            FieldViolation(
                e.get("ctx", {}).get("field") or loc_to_field(e["loc"]),
                "unknown field" if e["type"] == "extra_forbidden" else e["msg"],
            )
            for e in exc.errors()
        ]
        raise InvalidArgument.from_violations(
            violations, reason="ASSIGNMENT_POLICY_INVALID"
        ) from None


def check_reps(policy: AssignmentPolicy, unit_reps: frozenset[uuid.UUID]) -> None:
    """When a policy is saved: every listed rep must be an active rep of the unit."""
    violations = [
        FieldViolation(f"reps.{i}.user_id", "not an active rep of this org unit")
        for i, rep in enumerate(policy.reps)
        if uuid.UUID(rep.user_id) not in unit_reps
    ]
    if violations:
        raise InvalidArgument.from_violations(violations, reason="ASSIGNMENT_POLICY_INVALID")


def document_json(policy: AssignmentPolicy) -> dict[str, Any]:
    return policy.model_dump(mode="json")


@dataclass(frozen=True, slots=True)
class RepState:
    user_id: uuid.UUID
    held: int  # open leads held now
    weight: int = 1
    codes: frozenset[str] = frozenset()  # skills and product lines


@dataclass(frozen=True, slots=True)
class PoolLead:
    lead_id: uuid.UUID
    product_line: str = ""


@dataclass
class Plan:
    assignments: list[tuple[uuid.UUID, uuid.UUID]] = field(default_factory=list)
    cursor: int = 0
    left: Counter[str] = field(default_factory=Counter)


def eligible(policy: AssignmentPolicy, active_reps: frozenset[uuid.UUID]) -> list[Rep]:
    """The policy's reps that may get leads now, in document order."""
    return [r for r in policy.reps if r.active and uuid.UUID(r.user_id) in active_reps]


def rep_states(reps: Sequence[Rep], held: dict[uuid.UUID, int]) -> list[RepState]:
    return [
        RepState(
            user_id=(uid := uuid.UUID(r.user_id)),
            held=held.get(uid, 0),
            weight=r.weight,
            codes=frozenset(r.skills) | frozenset(r.product_lines),
        )
        for r in reps
    ]


def plan(
    strategy: Strategy,
    reps: Sequence[RepState],
    leads: Sequence[PoolLead],
    *,
    cap: int,
    cursor: int = 0,
) -> Plan:
    """Which rep gets each lead (in order). Nobody goes past ``cap`` open leads; a lead no rep
    can take stays in the pool, counted by reason in ``left``."""
    out = Plan(cursor=cursor)
    if strategy == "manual":
        return out
    if not reps:
        out.left[LEFT_NO_REPS] += len(leads)
        return out
    load = [r.held for r in reps]
    if strategy == "round_robin":
        _round_robin(reps, leads, load, cap, out)
    elif strategy == "load_based":
        _least_loaded(reps, leads, load, cap, out)
    else:
        _skill(reps, leads, load, cap, out)
    return out


def _round_robin(
    reps: Sequence[RepState], leads: Sequence[PoolLead], load: list[int], cap: int, out: Plan
) -> None:
    turns = [i for i, r in enumerate(reps) for _ in range(r.weight)]
    position = out.cursor % len(turns)
    for n, lead in enumerate(leads):
        for step in range(len(turns)):
            i = turns[(position + step) % len(turns)]
            if load[i] < cap:
                load[i] += 1
                out.assignments.append((lead.lead_id, reps[i].user_id))
                position = (position + step + 1) % len(turns)
                break
        else:
            out.left[LEFT_ALL_FULL] += len(leads) - n
            break
    out.cursor = position


def _least_loaded(
    reps: Sequence[RepState], leads: Sequence[PoolLead], load: list[int], cap: int, out: Plan
) -> None:
    # (load, document order): ties go to the rep listed first.
    heap = [(load[i], i) for i in range(len(reps)) if load[i] < cap]
    heapq.heapify(heap)
    for n, lead in enumerate(leads):
        if not heap:
            out.left[LEFT_ALL_FULL] += len(leads) - n
            return
        held, i = heapq.heappop(heap)
        out.assignments.append((lead.lead_id, reps[i].user_id))
        if held + 1 < cap:
            heapq.heappush(heap, (held + 1, i))


def _skill(
    reps: Sequence[RepState], leads: Sequence[PoolLead], load: list[int], cap: int, out: Plan
) -> None:
    generalists = [i for i, r in enumerate(reps) if not r.codes]
    everyone = list(range(len(reps)))
    for lead in leads:
        if lead.product_line:
            specialists = [i for i, r in enumerate(reps) if lead.product_line in r.codes]
            candidates = specialists or generalists
        else:
            candidates = everyone
        if not candidates:
            out.left[LEFT_NO_MATCH] += 1
            continue
        open_ = [i for i in candidates if load[i] < cap]
        if not open_:
            out.left[LEFT_ALL_FULL] += 1
            continue
        i = min(open_, key=lambda j: (load[j], j))
        load[i] += 1
        out.assignments.append((lead.lead_id, reps[i].user_id))


@dataclass(frozen=True, slots=True)
class UnitPool:
    """One unit's share of a run's batch: its policy's strategy, its eligible reps as they
    stand (open leads held now), its round-robin position and its pooled leads in order."""

    unit_id: uuid.UUID
    strategy: Strategy
    reps: Sequence[RepState]
    cursor: int
    leads: Sequence[PoolLead]


@dataclass(frozen=True, slots=True)
class UnitPlan:
    plan: Plan
    # Every eligible rep at the cap afterwards (or none eligible): the rest of the unit's
    # pool can wait for the next run instead of being read now.
    full: bool


def plan_units(pools: Sequence[UnitPool], *, cap: int) -> dict[uuid.UUID, UnitPlan]:
    """``plan`` for each unit of a batch on its own (units never share reps or leads), so a
    batch across many units decides exactly what per-unit runs over the same leads would."""
    out: dict[uuid.UUID, UnitPlan] = {}
    for pool in pools:
        decided = plan(pool.strategy, pool.reps, pool.leads, cap=cap, cursor=pool.cursor)
        given = Counter(rep for _, rep in decided.assignments)
        full = all(r.held + given[r.user_id] >= cap for r in pool.reps)
        out[pool.unit_id] = UnitPlan(decided, full)
    return out
