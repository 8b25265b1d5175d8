"""Follow-up activities (call, visit, message, note): the request, validated. No I/O."""

from __future__ import annotations

from datetime import datetime, timedelta
from typing import Literal

from crm.leads.v1 import events_pb2
from crm_platform.errors import invalid

Kind = Literal["call", "visit", "message", "note"]
KINDS: dict[str, int] = {
    "call": events_pb2.LEAD_ACTIVITY_KIND_CALL,
    "visit": events_pb2.LEAD_ACTIVITY_KIND_VISIT,
    "message": events_pb2.LEAD_ACTIVITY_KIND_MESSAGE,
    "note": events_pb2.LEAD_ACTIVITY_KIND_NOTE,
}
KIND_NAMES = {number: name for name, number in KINDS.items()}
MAX_NOTE = 4000
# Client clocks drift: an occur_time this little ahead of ours is "now", not the future.
CLOCK_SKEW = timedelta(minutes=1)


def occur_time(requested: datetime | None, now: datetime) -> datetime:
    """The activity's time: ``now`` when not given; never in the future."""
    if requested is None:
        return now
    if requested > now + CLOCK_SKEW:
        raise invalid("occur_time", "must not be in the future", reason="ACTIVITY_INVALID")
    return requested
