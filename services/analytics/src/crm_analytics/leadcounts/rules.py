"""Pure rules for lead-count reports."""

from __future__ import annotations

from datetime import date

from crm_platform.errors import FieldViolation, InvalidArgument

MAX_RANGE_DAYS = 366 * 3


def parse_range(start_day: str, end_day: str) -> tuple[date | None, date | None]:
    violations: list[FieldViolation] = []
    parsed: dict[str, date | None] = {}
    for name, value in (("start_day", start_day), ("end_day", end_day)):
        try:
            parsed[name] = date.fromisoformat(value) if value else None
        except ValueError:
            violations.append(FieldViolation(name, "an ISO date, YYYY-MM-DD"))
    start, end = parsed.get("start_day"), parsed.get("end_day")
    if start and end and end < start:
        violations.append(FieldViolation("end_day", "must not be before start_day"))
    if start and end and (end - start).days > MAX_RANGE_DAYS:
        violations.append(FieldViolation("end_day", f"range is limited to {MAX_RANGE_DAYS} days"))
    if violations:
        raise InvalidArgument.from_violations(violations, reason="REPORT_RANGE_INVALID")
    return start, end
