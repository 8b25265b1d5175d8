"""Pure rules for dealer performance: folding events into per-unit daily deltas, first
contact bookkeeping and the report's rates."""

from __future__ import annotations

import uuid
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from datetime import date, datetime
from typing import Any

from crm_analytics.dealerperf.models import COUNTERS


@dataclass(frozen=True)
class Unit:
    tenant_id: uuid.UUID
    org_id: uuid.UUID
    org_path: str


@dataclass
class Delta:
    """What one event (or batch) adds to one (tenant, unit, day) row."""

    unit: Unit
    day: date
    counts: dict[str, int] = field(default_factory=dict)
    first_contact_seconds: float = 0.0


def delta(unit: Unit, at: datetime, counter: str, n: int = 1) -> Delta:
    assert counter in COUNTERS, counter
    return Delta(unit=unit, day=at.date(), counts={counter: n})


def merge(deltas: Iterable[Delta]) -> list[Delta]:
    """One delta per (tenant, unit, day): a single INSERT … ON CONFLICT may not touch a row
    twice, and a batch event can land many leads at one unit."""
    out: dict[tuple[uuid.UUID, uuid.UUID, date], Delta] = {}
    for d in deltas:
        key = (d.unit.tenant_id, d.unit.org_id, d.day)
        acc = out.setdefault(key, Delta(unit=d.unit, day=d.day))
        for name, n in d.counts.items():
            acc.counts[name] = acc.counts.get(name, 0) + n
        acc.first_contact_seconds += d.first_contact_seconds
    return list(out.values())


def first_contact_deltas(
    unit: Unit, received: datetime, previous: datetime | None, contact: datetime
) -> list[Delta]:
    """Deltas when ``contact`` becomes the lead's first contact at ``unit`` (the caller checked
    it is after ``received`` and before ``previous``). An earlier activity consumed late
    replaces the previous first contact: its day's row gives the count and seconds back."""
    added = Delta(
        unit=unit,
        day=contact.date(),
        counts={"first_contacts": 1},
        first_contact_seconds=(contact - received).total_seconds(),
    )
    if previous is None:
        return [added]
    removed = Delta(
        unit=unit,
        day=previous.date(),
        counts={"first_contacts": -1},
        first_contact_seconds=-(previous - received).total_seconds(),
    )
    return merge([removed, added])


def is_new_first_contact(
    *, received: datetime, previous: datetime | None, contact: datetime
) -> bool:
    # Activities back-dated before the lead reached the unit are not its response.
    return contact >= received and (previous is None or contact < previous)


def ratio(numerator: float, denominator: float) -> float | None:
    return numerator / denominator if denominator else None


def rates(counts: Mapping[str, float]) -> dict[str, float | None]:
    """Acceptance rate over decided offers (accepted, rejected or expired), reclaim rate over
    leads received, average seconds to first contact; None where nothing to divide by."""
    decided = counts["accepted"] + counts["rejected"] + counts["expired"]
    return {
        "acceptance_rate": ratio(counts["accepted"], decided),
        "reclaim_rate": ratio(counts["reclaimed"], counts["received"]),
        "avg_first_contact_seconds": ratio(
            counts["first_contact_seconds"], counts["first_contacts"]
        ),
    }


def totals(rows: Iterable[Any]) -> dict[str, float]:
    """Column sums of report rows (anything with the counter attributes)."""
    out: dict[str, float] = {name: 0 for name in (*COUNTERS, "first_contact_seconds")}
    for row in rows:
        for name in out:
            out[name] += getattr(row, name)
    return out
