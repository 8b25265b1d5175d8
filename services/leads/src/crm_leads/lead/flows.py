"""Capture use cases shared by the REST and gRPC adapters: one lead, or a batch with one
result per item where a bad item never blocks the others."""

from __future__ import annotations

import logging
import uuid
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

from opentelemetry import context as otel_context

from crm_leads.lead import group, service
from crm_leads.lead.rules import NewIntent, NewLead
from crm_platform import metrics
from crm_platform.auth import WRITE_ROLES, Principal
from crm_platform.db import Database
from crm_platform.errors import DomainError, FieldViolation, InvalidArgument, Unavailable
from crm_platform.group_commit import GroupCommit

log = logging.getLogger(__name__)

MAX_BATCH = 1000


@dataclass(frozen=True)
class CaptureRequest:
    """A validated capture, or the violations that reject it."""

    lead: NewLead | None
    intent: NewIntent | None
    request_id: uuid.UUID | None
    violations: Sequence[FieldViolation] = ()


@dataclass(frozen=True)
class ItemResult:
    index: int
    captured: service.Captured | None
    violations: Sequence[FieldViolation] = ()


class Captures:
    """Single captures (REST and gRPC create), group-committed: concurrent requests' captures
    share a transaction and set-based statements (crm_leads.lead.group). At most
    ``max_in_flight`` groups write at a time; an idle service writes each capture alone, at
    once."""

    def __init__(self, db: Database, *, max_group: int = 64, max_in_flight: int = 2) -> None:
        self._db = db
        self._group: GroupCommit[group.Capture, group.Answer] = GroupCommit(
            "lead-capture", self._write, max_group=max_group, max_in_flight=max_in_flight
        )

    async def capture(
        self,
        principal: Principal,
        lead: NewLead,
        intent: NewIntent,
        request_id: uuid.UUID | None,
    ) -> group.Answer:
        """The captured lead and the intents to show (none for a lead the caller cannot
        see), once committed."""
        principal.require_any(WRITE_ROLES)
        capture = group.Capture(principal, lead, intent, request_id, otel_context.get_current())
        return await self._group.submit(capture)

    async def _write(self, items: Sequence[group.Capture]) -> list[group.Answer | BaseException]:
        answers: list[group.Answer | BaseException]
        try:
            async with self._db.unit_of_work() as conn:
                answers = [*await group.capture_group(conn, items)]
        except Unavailable:
            raise  # no connection (pool exhausted): every item is refused, retryable
        except group.Replayed:
            answers = await self._each(items)
        except Exception:
            if len(items) == 1:
                raise
            # A failure of the whole group (a deadlock between two groups' merges, say):
            # each item on its own, so only an item at fault fails.
            log.warning("a group of %d captures failed; capturing them one at a time", len(items))
            answers = await self._each(items)
        # After the commit: a capture that rolled back was never captured.
        metrics.count_captures(a[0].outcome.name for a in answers if isinstance(a, tuple))
        return answers

    async def _each(self, items: Sequence[group.Capture]) -> list[group.Answer | BaseException]:
        answers: list[group.Answer | BaseException] = []
        for item in items:
            try:
                async with self._db.unit_of_work() as conn:
                    answers.append(await group.capture_in(conn, item))
            except Exception as exc:
                answers.append(exc)
        return answers


CAPTURES = "lead-captures"


def captures(extras: dict[str, Any], db: Database) -> Captures:
    """The process's one ``Captures`` (in ``Runtime.extras``), so REST and gRPC creates
    share groups."""
    found = extras.get(CAPTURES)
    if not isinstance(found, Captures):
        found = extras[CAPTURES] = Captures(db)
    return found


async def capture_batch(
    db: Database, principal: Principal, items: Sequence[CaptureRequest]
) -> list[ItemResult]:
    """One transaction, set-based like a group of single captures (crm_leads.lead.group):
    an item that fails rolls back alone, and duplicates inside the batch merge into the lead
    an earlier item created."""
    if len(items) > MAX_BATCH:
        raise InvalidArgument.from_violations(
            [FieldViolation("leads", f"at most {MAX_BATCH} per call")], reason="BATCH_TOO_LARGE"
        )
    principal.require_any(WRITE_ROLES)
    results = [ItemResult(index, None, item.violations) for index, item in enumerate(items)]
    valid: list[int] = []
    captures: list[group.Capture] = []
    for index, item in enumerate(items):
        if item.lead is not None and item.intent is not None:
            valid.append(index)
            captures.append(group.Capture(principal, item.lead, item.intent, item.request_id))
    async with db.unit_of_work() as conn:
        try:
            async with conn.begin_nested():
                answers: Sequence[group.Answer | DomainError] = await group.capture_group(
                    conn, captures
                )
        except group.Replayed:
            # A retried item: one savepoint each, so it is answered as the first time.
            answers = [await group.capture_alone(conn, capture) for capture in captures]
    for index, answer in zip(valid, answers, strict=True):
        if isinstance(answer, tuple):
            results[index] = ItemResult(index, answer[0])
        else:
            violations = answer.violations or [FieldViolation("request_id", answer.message)]
            results[index] = ItemResult(index, None, violations)
    metrics.count_captures(r.captured.outcome.name if r.captured else "REJECTED" for r in results)
    return results
