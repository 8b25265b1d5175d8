"""The set-based core of assignment runs, without I/O (hypothesis): a subtree's pools read in
(path, id) batches of any size that span several units, planned per unit with
``plan_units`` and continued by ``next_keyset``, decide exactly what one ``plan`` over each
unit's whole pool decides: the same rep for every lead, the same round-robin cursor, nobody
past the cap, no lead twice, and units without an automatic policy never touched. The ranges
a subtree run splits into cover every path of the subtree exactly once."""

from __future__ import annotations

import uuid
from collections import Counter
from dataclasses import dataclass, replace

from hypothesis import given, settings
from hypothesis import strategies as st

from crm_leads.assignment.rules import (
    AssignmentPolicy,
    PoolLead,
    RepState,
    Strategy,
    UnitPool,
    plan,
    plan_units,
)
from crm_leads.assignment.service import Target, next_keyset, slices

CODES = ("ev", "suv", "sedan")
ROOT = "/t/"


@dataclass(frozen=True)
class Unit:
    id: uuid.UUID
    path: str
    automatic: bool
    strategy: Strategy
    reps: tuple[RepState, ...]
    cursor: int
    leads: tuple[PoolLead, ...]


@dataclass(frozen=True, order=True)
class Row:
    owner_org_path: str
    id: uuid.UUID


@st.composite
def subtrees(draw: st.DrawFn) -> tuple[list[Unit], int, int]:
    cap = draw(st.integers(1, 5))
    serial = iter(range(1, 10_000))
    units = []
    for n in range(draw(st.integers(1, 4))):
        reps = tuple(
            RepState(
                uuid.UUID(int=next(serial)),
                held=draw(st.integers(0, cap)),
                weight=draw(st.integers(1, 3)),
                codes=frozenset(draw(st.lists(st.sampled_from(CODES), max_size=2))),
            )
            for _ in range(draw(st.integers(0, 3)))
        )
        leads = tuple(
            PoolLead(uuid.UUID(int=next(serial)), draw(st.sampled_from(("", *CODES))))
            for _ in range(draw(st.integers(0, 12)))
        )
        units.append(
            Unit(
                uuid.UUID(int=next(serial)),
                # The root, then children: paths sort parents first, as in the tree.
                ROOT if n == 0 else f"{ROOT}u{n}/",
                draw(st.booleans()),
                draw(st.sampled_from(("round_robin", "load_based", "skill"))),
                reps,
                draw(st.integers(0, 7)),
                leads,
            )
        )
    return units, cap, draw(st.integers(1, 15))


@dataclass
class Outcome:
    assignments: dict[uuid.UUID, list[tuple[uuid.UUID, uuid.UUID]]]
    cursors: dict[uuid.UUID, int]
    left: dict[uuid.UUID, Counter[str]]
    looked_at: Counter[uuid.UUID]
    held: dict[uuid.UUID, int]


def batched(units: list[Unit], cap: int, size: int) -> Outcome:
    """What the service's batch loop does, with the pool as a list instead of a table."""
    by_path = {u.path: u for u in units}
    targets = {
        u.path: Target(u.id, u.path, AssignmentPolicy(strategy=u.strategy))
        for u in units
        if u.automatic
    }
    pool = sorted(Row(u.path, lead.lead_id) for u in units for lead in u.leads)
    leads = {lead.lead_id: lead for u in units for lead in u.leads}
    held = {r.user_id: r.held for u in units for r in u.reps}
    out = Outcome(
        {u.id: [] for u in units},
        {u.id: u.cursor for u in units},
        {u.id: Counter() for u in units},
        Counter(),
        held,
    )
    taken: set[uuid.UUID] = set()
    after: tuple[str, uuid.UUID] | None = (ROOT, uuid.UUID(int=0))
    while after is not None:
        key = after
        batch = [r for r in pool if (r.owner_org_path, r.id) > key and r.id not in taken][:size]
        chunks: dict[str, list[PoolLead]] = {}
        for row in batch:
            if row.owner_org_path in targets:
                chunks.setdefault(row.owner_org_path, []).append(leads[row.id])
        pools = [
            UnitPool(
                (u := by_path[path]).id,
                u.strategy,
                [replace(r, held=held[r.user_id]) for r in u.reps],
                out.cursors[u.id],
                chunk,
            )
            for path, chunk in chunks.items()
        ]
        plans = plan_units(pools, cap=cap)
        for p in pools:
            decided = plans[p.unit_id].plan
            out.assignments[p.unit_id] += decided.assignments
            out.cursors[p.unit_id] = decided.cursor
            out.left[p.unit_id].update(decided.left)
            out.looked_at[p.unit_id] += len(p.leads)
            for lead, rep in decided.assignments:
                assert lead not in taken
                taken.add(lead)
                held[rep] += 1
        after = next_keyset(batch, limit=size, targets=targets, plans=plans, descendants=True)
    return out


@given(subtrees())
@settings(max_examples=300, deadline=None)
def test_batches_across_units_decide_as_one_plan_per_unit(
    case: tuple[list[Unit], int, int],
) -> None:
    units, cap, size = case
    out = batched(units, cap, size)
    assert all(n <= cap for n in out.held.values())
    for u in units:
        if not u.automatic:
            assert out.assignments[u.id] == [] and out.looked_at[u.id] == 0
            assert out.cursors[u.id] == u.cursor
            continue
        whole = plan(u.strategy, u.reps, u.leads, cap=cap, cursor=u.cursor)
        assert out.assignments[u.id] == whole.assignments
        # A unit with nothing to assign keeps its stored cursor (plan would only reduce it
        # modulo its turns).
        assert out.cursors[u.id] == (whole.cursor if u.leads else u.cursor)
        assert {rep for _, rep in whole.assignments} <= {r.user_id for r in u.reps}
        # Every lead looked at is assigned or counted; a unit nobody in can take more is
        # not read to its end, so it may count fewer than one plan over the whole pool.
        left = out.left[u.id]
        assert len(out.assignments[u.id]) + left.total() == out.looked_at[u.id]
        assert all(left[reason] <= n for reason, n in whole.left.items())
        assert set(left) <= set(whole.left)
        if out.looked_at[u.id] == len(u.leads):
            assert left == whole.left


segments = st.lists(st.sampled_from(("a", "b", "ab", "b0", "z")), min_size=1, max_size=3)


@given(
    paths=st.sets(segments.map(lambda s: ROOT + "".join(x + "/" for x in s)), max_size=12),
    leads=st.lists(segments.map(lambda s: ROOT + "".join(x + "/" for x in s)), max_size=30),
    workers=st.integers(1, 6),
)
def test_slices_cover_the_subtree_once(paths: set[str], leads: list[str], workers: int) -> None:
    ordered = sorted(paths)
    ranges = slices(ROOT, ordered, workers)
    assert len(ranges) == min(workers, len(ordered))
    for path in ordered + leads + [ROOT]:
        if ranges:
            assert sum(1 for lo, hi in ranges if lo <= path < hi) == 1, path
    # Every range has units to assign, and none reaches outside the subtree.
    assert all(any(lo <= p < hi for p in ordered) for lo, hi in ranges)
    assert all(not (lo <= "/t0" < hi) and not (lo <= "/s/" < hi) for lo, hi in ranges)
