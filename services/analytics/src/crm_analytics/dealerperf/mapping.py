"""REST bodies of the dealer performance report (no proto message exists for it yet)."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

from crm_analytics.dealerperf import rules
from crm_analytics.dealerperf.models import COUNTERS


def _figures(counts: Mapping[str, float]) -> dict[str, Any]:
    return {
        **{name: int(counts[name]) for name in COUNTERS},
        "first_contact_seconds": float(counts["first_contact_seconds"]),
        **rules.rates(counts),
    }


def row_to_json(row: Any) -> dict[str, Any]:
    counts = {name: getattr(row, name) for name in (*COUNTERS, "first_contact_seconds")}
    return {
        "org_unit_id": str(row.owner_org_id),
        "org_path": row.owner_org_path,
        "day": row.day.isoformat(),
        **_figures(counts),
    }


def report_to_json(rows: Sequence[Any]) -> dict[str, Any]:
    """Rows per unit and day, plus totals over all of them (rates from the sums, never an
    average of daily rates)."""
    return {"rows": [row_to_json(r) for r in rows], "totals": _figures(rules.totals(rows))}
