"""The distribution engine: an org unit's rules and its children's profiles compiled once
into indexes, then one decision per lead in O(candidates). No I/O.

The caller owns the counters (``DistributionState``: leads given to each unit today and this
week, its open load, the round-robin cursors), loads them before a batch and persists them
with the decisions; the engine only reads and advances them, so capacities hold exactly
across a batch of any size."""

from __future__ import annotations

import heapq
import math
import sys
import uuid
from abc import ABC, abstractmethod
from bisect import bisect_left
from collections.abc import Iterable, Mapping
from datetime import datetime, tzinfo
from typing import NamedTuple

from crm_leads.distribution.rules import (
    WEEKDAYS,
    DistributionRules,
    LeadFacts,
    Match,
    Profile,
    Rule,
    minutes,
)

UNLIMITED = sys.maxsize
MAX_CASCADE_DEPTH = 64
# Full targets a round-robin walk may step over before it rebuilds its list without them.
STALE_LIMIT = 4


class Moment(NamedTuple):
    """A local time in the tenant's timezone, as active hours are written."""

    weekday: int  # 0 = Monday
    minute: int  # minutes since local midnight


def moment_at(when: datetime, tz: tzinfo) -> Moment:
    local = when.astimezone(tz)
    return Moment(local.weekday(), local.hour * 60 + local.minute)


class Decision(NamedTuple):
    target_unit_id: str | None  # None: the lead stays in the deciding unit's pool
    rule_name: str | None  # the rule that placed it (a fallback's name when one did)
    reason: str
    unmatched: bool


# A round-robin schedule's entries still worth walking: their positions and targets.
_Live = tuple[list[int], list["_Target"]]


class Load:
    """One unit's counters. ``today``/``week`` reset with the tenant's day and week (the
    caller loads the current period's figures); ``open_leads`` is the unit's open leads."""

    __slots__ = ("open_leads", "today", "week")

    def __init__(self, today: int = 0, week: int = 0, open_leads: int = 0) -> None:
        self.today = today
        self.week = week
        self.open_leads = open_leads

    def __repr__(self) -> str:
        return f"Load(today={self.today}, week={self.week}, open_leads={self.open_leads})"


class DistributionState:
    """Counters by unit id and round-robin cursors by ``<unit id>:<rule name>``; one state
    serves every level of a cascade (unit ids are unique)."""

    __slots__ = ("cursors", "full", "live", "loads")

    def __init__(
        self, loads: dict[str, Load] | None = None, cursors: dict[str, int] | None = None
    ) -> None:
        self.loads: dict[str, Load] = loads if loads is not None else {}
        self.cursors: dict[str, int] = cursors if cursors is not None else {}
        # Derived, not persisted: units seen at capacity (counters only grow within a
        # period) and each round-robin schedule without them, by product line.
        self.full: set[str] = set()
        self.live: dict[tuple[str, str], _Live] = {}

    def record(self, unit_id: str) -> Load:
        load = self.loads.get(unit_id)
        if load is None:
            load = self.loads[unit_id] = Load()
        load.today += 1
        load.week += 1
        load.open_leads += 1
        return load


class _Target:
    """A child's profile as plain attributes for the hot loop."""

    __slots__ = (
        "active",
        "basis",
        "daily",
        "hours",
        "id",
        "products",
        "territories",
        "tier",
        "weekly",
        "weight",
    )

    def __init__(self, unit_id: str, profile: Profile) -> None:
        self.id = unit_id
        self.daily = UNLIMITED if profile.daily_capacity is None else profile.daily_capacity
        self.weekly = UNLIMITED if profile.weekly_capacity is None else profile.weekly_capacity
        # least_loaded compares open load per unit of capacity (the backlog in days).
        basis = profile.daily_capacity or profile.weekly_capacity or profile.weight
        self.basis = float(max(basis, 1))
        self.products = frozenset(profile.product_lines) or None
        self.tier = profile.tier
        self.territories = tuple(profile.territories)
        self.weight = profile.weight
        self.active = profile.active
        self.hours: tuple[tuple[tuple[int, int], ...], ...] | None = None
        if profile.active_hours is not None:
            days = profile.active_hours
            self.hours = tuple(
                tuple((minutes(w.start), minutes(w.end)) for w in days.get(day) or ())
                for day in WEEKDAYS
            )

    def open_at(self, at: Moment) -> bool:
        """Inactive, zero-capacity and out-of-hours units are closed: ``_available`` only
        compares the counters of units that have some."""
        if not self.active or self.daily == 0 or self.weekly == 0:
            return False
        if self.hours is None:
            return True
        return any(start <= at.minute < end for start, end in self.hours[at.weekday])


def _available(t: _Target, loads: dict[str, Load], skip: frozenset[str], product: str) -> bool:
    if t.id in skip:
        return False
    if product and t.products is not None and product not in t.products:
        return False
    load = loads.get(t.id)
    # A full target is skipped: capacity is never exceeded.
    return load is None or (load.today < t.daily and load.week < t.weekly)


def _least_loaded(
    candidates: Iterable[_Target], loads: dict[str, Load], skip: frozenset[str], product: str
) -> _Target | None:
    """Lowest open load per unit of capacity; ties keep the candidates' order. (The
    availability test of ``_available`` is inlined: this loop is the hottest.)"""
    best: _Target | None = None
    best_ratio = math.inf
    for t in candidates:
        if t.id in skip or (product and t.products is not None and product not in t.products):
            continue
        load = loads.get(t.id)
        if load is None:
            return t if best is None or best_ratio > 0.0 else best
        if load.today >= t.daily or load.week >= t.weekly:
            continue
        ratio = load.open_leads / t.basis
        if ratio < best_ratio:
            best, best_ratio = t, ratio
    return best


class _Picker(ABC):
    """One strategy's choice among a rule's targets."""

    @abstractmethod
    def pick(
        self, facts: LeadFacts, state: DistributionState, skip: frozenset[str]
    ) -> _Target | None: ...


class _Territory(_Picker):
    """Targets covering the lead's territory, else its city, else its province; the least
    loaded of the most specific level that has an available target."""

    def __init__(self, targets: list[tuple[_Target, int]]) -> None:
        by_code: dict[str, list[_Target]] = {}
        for t, _ in targets:
            for code in t.territories:
                by_code.setdefault(code, []).append(t)
        self._by_code = {code: tuple(ts) for code, ts in by_code.items()}

    def pick(
        self, facts: LeadFacts, state: DistributionState, skip: frozenset[str]
    ) -> _Target | None:
        by_code = self._by_code
        for code in (facts.territory, facts.city, facts.province):
            if code:
                candidates = by_code.get(code)
                if candidates:
                    found = _least_loaded(candidates, state.loads, skip, facts.product_line)
                    if found is not None:
                        return found
        return None


class _LeastLoaded(_Picker):
    def __init__(self, targets: list[tuple[_Target, int]]) -> None:
        self._targets = tuple(t for t, _ in targets)

    def pick(
        self, facts: LeadFacts, state: DistributionState, skip: frozenset[str]
    ) -> _Target | None:
        return _least_loaded(self._targets, state.loads, skip, facts.product_line)


class _Priority(_Picker):
    def __init__(self, targets: list[tuple[_Target, int]]) -> None:
        # Stable sort: equal priorities keep the listed order.
        self._targets = tuple(t for t, _ in sorted(targets, key=lambda tp: tp[1]))

    def pick(
        self, facts: LeadFacts, state: DistributionState, skip: frozenset[str]
    ) -> _Target | None:
        loads, product = state.loads, facts.product_line
        for t in self._targets:
            if _available(t, loads, skip, product):
                return t
        return None


def smooth_schedule(weights: list[int]) -> list[int]:
    """Indexes into ``weights``, each appearing weight/gcd times per cycle, spread evenly:
    the k-th turn of i falls at virtual time (k + ½)/wᵢ (the Sainte-Laguë sequence), so a
    heavy target's turns are interleaved with the light ones' instead of coming in a burst,
    and every whole cycle gives each target exactly its share. Ties go to the lower index."""
    if not weights:
        return []
    g = math.gcd(*weights)
    reduced = [w // g for w in weights]
    heap = [(0.5 / w, i, 0) for i, w in enumerate(reduced)]
    heapq.heapify(heap)
    schedule: list[int] = []
    for _ in range(sum(reduced)):
        _, i, k = heapq.heappop(heap)
        schedule.append(i)
        heapq.heappush(heap, ((k + 1.5) / reduced[i], i, k + 1))
    return schedule


class _RoundRobin(_Picker):
    """Walks the precomputed smooth schedule from the state's cursor (a position in the
    schedule), skipping unavailable targets: O(1) per decision while targets have room. The
    walk goes over the schedule's entries whose target sells the lead's product line and is
    not known to be full; when it meets full targets still listed, it notes them and rebuilds
    that list, so a nearly saturated unit does not step over the same full entries lead
    after lead."""

    def __init__(self, key: str, targets: list[tuple[_Target, int]]) -> None:
        self._key = key
        self._distinct = tuple(t for t, _ in targets)
        order = smooth_schedule([w for _, w in targets])
        self._schedule = tuple(self._distinct[i] for i in order)

    def _live(self, state: DistributionState, product: str) -> _Live:
        full = state.full
        entries = [
            (i, t)
            for i, t in enumerate(self._schedule)
            if t.id not in full and (not product or t.products is None or product in t.products)
        ]
        live = ([i for i, _ in entries], [t for _, t in entries])
        state.live[self._key, product] = live
        return live

    def pick(
        self, facts: LeadFacts, state: DistributionState, skip: frozenset[str]
    ) -> _Target | None:
        product = facts.product_line
        live = state.live.get((self._key, product)) or self._live(state, product)
        while True:
            target, stale = self._walk(live, facts, state, skip)
            if not stale:
                return target
            # Each pass adds STALE_LIMIT units to state.full: this ends.
            live = self._live(state, product)

    def _walk(
        self, live: _Live, facts: LeadFacts, state: DistributionState, skip: frozenset[str]
    ) -> tuple[_Target | None, bool]:
        positions, targets = live
        m, n = len(positions), len(self._schedule)
        if not m:
            return None, False
        loads, product, cursors, full = state.loads, facts.product_line, state.cursors, state.full
        j = bisect_left(positions, cursors.get(self._key, 0) % n)
        j = j if j < m else 0
        stale = 0
        probe_after = len(self._distinct)
        for misses in range(m):
            t = targets[j]
            if _available(t, loads, skip, product):
                after = positions[j] + 1
                cursors[self._key] = after if after < n else 0
                return t, False
            load = loads.get(t.id)
            if load is not None and (load.today >= t.daily or load.week >= t.weekly):
                full.add(t.id)
                stale += 1
                if stale == STALE_LIMIT:
                    return None, True
            j = j + 1 if j + 1 < m else 0
            # Many misses in a row: stop walking if no target is available at all.
            if misses + 1 == probe_after and not any(
                _available(d, loads, skip, product) for d in self._distinct
            ):
                return None, False
        return None, False


class _Step(NamedTuple):
    picker: _Picker
    rule_name: str
    reason: str


class _RuleIndex:
    """The first rule whose match a lead meets, in O(conditions): for every attribute some
    rule tests, a table from value to the bitmask of rules that value satisfies (rules not
    testing it included); a lead's rules are the AND of its values' masks."""

    def __init__(self, matches: list[Match]) -> None:
        everyone = (1 << len(matches)) - 1
        self._everyone = everyone
        columns: dict[str, list[tuple[int, frozenset[str]]]] = {}
        custom: dict[str, list[tuple[int, frozenset[str]]]] = {}
        for i, match in enumerate(matches):
            for attr, values in (
                ("province", match.provinces),
                ("city", match.cities),
                ("territory", match.territories),
                ("product_line", match.product_lines),
                ("source", match.sources),
                ("grade", match.grades),
            ):
                if values:
                    columns.setdefault(attr, []).append((i, frozenset(values)))
            for key, condition in match.custom.items():
                custom.setdefault(key, []).append((i, condition.accepted()))
        self._attrs = tuple(
            (attr, *_value_masks(conditions, everyone)) for attr, conditions in columns.items()
        )
        self._custom = tuple(
            (key, *_value_masks(conditions, everyone)) for key, conditions in sorted(custom.items())
        )
        bounds = [(m.score_min, m.score_max) for m in matches]
        self._scores: tuple[int, ...] | None = None
        if any(low is not None or high is not None for low, high in bounds):
            self._scores = tuple(
                sum(
                    1 << i
                    for i, (low, high) in enumerate(bounds)
                    if (low is None or score >= low) and (high is None or score <= high)
                )
                for score in range(101)
            )

    def first(self, facts: LeadFacts) -> int:
        """The index of the first matching rule, or -1."""
        mask = self._everyone
        for attr, table, free in self._attrs:
            mask &= table.get(getattr(facts, attr), free)
        scores = self._scores
        if scores is not None:
            # Scores are 0..100 (crm_leads.scoring); outside, the nearest bound decides.
            mask &= scores[min(100, max(0, facts.score))]
        if self._custom:
            values = facts.custom
            for key, table, free in self._custom:
                mask &= table.get(values.get(key), free)
        return (mask & -mask).bit_length() - 1


def _value_masks(
    conditions: list[tuple[int, frozenset[str]]], everyone: int
) -> tuple[dict[str | None, int], int]:
    """Value -> rules it satisfies; ``free``: the rules without this condition (any value)."""
    free = everyone
    for i, _ in conditions:
        free &= ~(1 << i)
    table: dict[str | None, int] = {}
    for i, values in conditions:
        for value in values:
            table[value] = table.get(value, free) | (1 << i)
    return table, free


class Distributor:
    """One org unit's rules compiled against its children's profiles (``profiles`` keyed by
    child unit id). Targets that are not among ``profiles`` are not children (any more) and
    are ignored, so a decision never leaves the unit's direct children."""

    def __init__(
        self, unit_id: str, rules: DistributionRules, profiles: Mapping[str, Profile]
    ) -> None:
        self.unit_id = _canonical(unit_id)
        self.rules = rules
        self._targets = {
            cid: _Target(cid, p)
            for cid, p in sorted((_canonical(k), v) for k, v in profiles.items())
        }
        pickers = {rule.name: self._picker(rule) for rule in rules.rules}
        by_name = {rule.name: rule for rule in rules.rules}
        self._index = _RuleIndex([rule.match for rule in rules.rules])
        self._chains = tuple(_chain(rule, by_name, pickers) for rule in rules.rules)
        self._exhausted = tuple(
            Decision(
                None,
                rule.name,
                f"rule {rule.name}: no target available (full, closed, inactive or excluded)",
                True,
            )
            for rule in rules.rules
        )
        self._no_rule = Decision(None, None, "no rule matched", True)
        self._closed: tuple[Moment, frozenset[str]] | None = None

    @property
    def children(self) -> frozenset[str]:
        return frozenset(self._targets)

    def _picker(self, rule: Rule) -> _Picker:
        weights: dict[str, int | None] = {}
        if rule.targets is None:
            chosen = [(t, 0) for t in self._targets.values()]
        else:
            chosen = [
                (self._targets[t.unit_id], t.priority)
                for t in rule.targets
                if t.unit_id in self._targets
            ]
            weights = {t.unit_id: t.weight for t in rule.targets}
        if rule.tiers is not None:
            tiers = frozenset(rule.tiers)
            chosen = [(t, p) for t, p in chosen if t.tier in tiers]
        if rule.strategy == "territory":
            return _Territory(chosen)
        if rule.strategy == "least_loaded":
            return _LeastLoaded(chosen)
        if rule.strategy == "priority":
            return _Priority(chosen)
        weighted = [(t, weights.get(t.id) or t.weight) for t, _ in chosen]
        return _RoundRobin(f"{self.unit_id}:{rule.name}", weighted)

    def closed_at(self, at: Moment) -> frozenset[str]:
        """Children that cannot receive now (inactive, zero capacity, outside active hours);
        computed once per moment, which a batch shares."""
        cached = self._closed
        if cached is not None and cached[0] == at:
            return cached[1]
        closed = frozenset(t.id for t in self._targets.values() if not t.open_at(at))
        self._closed = (at, closed)
        return closed

    def decide(self, facts: LeadFacts, state: DistributionState, *, at: Moment) -> Decision:
        """The child to give ``facts`` to (and its counters advanced in ``state``), or the
        unit's own pool with ``unmatched`` set."""
        index = self._index.first(facts)
        if index < 0:
            return self._no_rule
        skip = self.closed_at(at)
        if facts.excluded:
            skip = skip | facts.excluded
        for step in self._chains[index]:
            target = step.picker.pick(facts, state, skip)
            if target is not None:
                load = state.record(target.id)
                if load.today >= target.daily or load.week >= target.weekly:
                    state.full.add(target.id)
                return Decision(target.id, step.rule_name, step.reason, False)
        return self._exhausted[index]

    def decide_many(
        self, leads: Iterable[LeadFacts], state: DistributionState, *, at: Moment
    ) -> list[Decision]:
        """In order, each decision seeing the counters the previous ones advanced."""
        decide = self.decide
        return [decide(facts, state, at=at) for facts in leads]


def _canonical(unit_id: str) -> str:
    return str(uuid.UUID(unit_id))


def _chain(
    rule: Rule, by_name: Mapping[str, Rule], pickers: Mapping[str, _Picker]
) -> tuple[_Step, ...]:
    steps = [_Step(pickers[rule.name], rule.name, f"rule {rule.name}")]
    step = rule.fallback
    while step is not None:  # acyclic: validated with the document
        steps.append(_Step(pickers[step], step, f"rule {rule.name}, fallback {step}"))
        step = by_name[step].fallback
    return tuple(steps)


def cascade(
    facts: LeadFacts,
    state: DistributionState,
    *,
    start: str,
    distributors: Mapping[str, Distributor],
    at: Moment,
) -> list[Decision]:
    """Distribute down the tree in one pass (HQ → region → dealer → store): each unit that
    has a distributor passes the lead on to one of its children; the path ends at a unit
    without automatic rules or at an unmatched decision (the lead stays there)."""
    path: list[Decision] = []
    unit = start
    for _ in range(MAX_CASCADE_DEPTH):
        distributor = distributors.get(unit)
        if distributor is None:
            break
        decision = distributor.decide(facts, state, at=at)
        path.append(decision)
        if decision.target_unit_id is None:
            break
        unit = decision.target_unit_id
    return path
