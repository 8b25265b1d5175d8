"""Org units that move (the directory's ``:move``) take what they own along.

Every service stores the owner path of what it holds, and visibility is a prefix match on
it (``crm_platform.auth.visible_to``), so a move has to reach two places in each service:

- the stored paths: ``path_rewriter`` is the handler of a durable consumer of
  crm.directory.org_unit.moved.v1 that rewrites them set-based, one UPDATE per column;
- the callers' paths: a token carries the org path it was issued with and lives up to a
  day, so each process remembers the recent moves (``PathMoves``, fed by an ephemeral
  ordered JetStream consumer from that far back) and reads a principal whose token is older
  than a move with its unit's new path. Without that, the moved unit's users would see
  nothing of their own until they signed in again, and what they created meanwhile would
  stay under the old path, seen by nobody below HQ.
"""

from __future__ import annotations

import bisect
import dataclasses
import logging
import time
import uuid
from collections.abc import Sequence
from datetime import UTC, datetime, timedelta
from typing import TYPE_CHECKING

import sqlalchemy as sa
from nats.aio.msg import Msg
from nats.js.api import ConsumerConfig, DeliverPolicy
from sqlalchemy.ext.asyncio import AsyncConnection

from crm.directory.v1 import events_pb2
from crm_platform.auth import Principal
from crm_platform.consumers import ConsumerSpec, EventHandler
from crm_platform.events import PoisonMessage, ReceivedEvent, parse_event

if TYPE_CHECKING:
    from nats.js.client import JetStreamContext

    from crm_platform.events import Namespace

log = logging.getLogger(__name__)

MOVED = "crm.directory.org_unit.moved.v1"
# The longest token lifetime the directory issues (token_ttl_seconds ≤ 86,400), plus skew.
REMEMBER_SECONDS = 86_400 + 300


def rewritten(column: sa.ColumnElement[str], old: str, new: str) -> sa.ColumnElement[str]:
    """``column`` with its ``old`` prefix replaced by ``new`` (the caller filters on it)."""
    return sa.literal(new) + sa.func.substr(column, len(old) + 1)


def path_rewriter(columns: Sequence[sa.Column[str]]) -> EventHandler:
    """Handler of crm.directory.org_unit.moved.v1 rewriting every path under the moved
    unit's old path in ``columns`` (each of a table with ``tenant_id``). Run it on a
    consumer that keeps the stream's order: two moves of one subtree apply in turn."""

    async def on_org_unit_moved(conn: AsyncConnection, event: ReceivedEvent) -> None:
        moved = event.payload
        if not isinstance(moved, events_pb2.OrgUnitMoved):
            raise PoisonMessage(f"not an OrgUnitMoved: {type(moved).__name__}")
        old, new = moved.old_path, moved.new_path
        if not old or not new or old == new:
            raise PoisonMessage(f"a move from {old!r} to {new!r}")
        tenant_id = uuid.UUID(moved.org_unit.tenant_id)
        for column in columns:
            table = column.table
            assert isinstance(table, sa.Table)
            await conn.execute(
                table.update()
                .where(table.c.tenant_id == tenant_id, column.startswith(old, autoescape=True))
                .values({column.name: rewritten(column, old, new)})
            )

    return on_org_unit_moved


def path_consumer(service: str, *columns: sa.Column[str]) -> ConsumerSpec:
    """The service's durable consumer keeping ``columns`` in step with the org tree."""
    return ConsumerSpec(
        name=f"{service}-org-unit-moved-paths", event_type=MOVED, handler=path_rewriter(columns)
    )


@dataclasses.dataclass(frozen=True, order=True)
class Move:
    time: float  # when the directory moved the unit (epoch seconds)
    old: str
    new: str


class PathMoves:
    """The moves of the last ``REMEMBER_SECONDS`` per tenant, in time order."""

    def __init__(self) -> None:
        self._by_tenant: dict[uuid.UUID, list[Move]] = {}

    def add(self, tenant_id: uuid.UUID, move: Move) -> None:
        moves = self._by_tenant.setdefault(tenant_id, [])
        if move not in moves:
            bisect.insort(moves, move)
        horizon = time.time() - REMEMBER_SECONDS
        while moves and moves[0].time < horizon:
            moves.pop(0)

    def current_path(self, tenant_id: uuid.UUID, path: str, issued_at: float) -> str:
        """``path`` as of now for a credential issued at ``issued_at``: every later move of
        a unit at or above it applied in turn. A token's ``iat`` is whole seconds (rounded
        down), so one of the move's own second counts as older: if it was issued after the
        move, its path is the new one already and no old prefix matches it."""
        for move in self._by_tenant.get(tenant_id, ()):
            if issued_at <= move.time and path.startswith(move.old):
                path = move.new + path[len(move.old) :]
        return path

    def current(self, principal: Principal, issued_at: float) -> Principal:
        if principal.tenant_id not in self._by_tenant:  # the common case: one dict lookup
            return principal
        path = self.current_path(principal.tenant_id, principal.org_path, issued_at)
        if path == principal.org_path:
            return principal
        return dataclasses.replace(principal, org_path=path)

    def remember(self, event: ReceivedEvent) -> None:
        moved = event.payload
        if isinstance(moved, events_pb2.OrgUnitMoved) and moved.old_path and moved.new_path:
            occurred = event.envelope.occurred_at.ToDatetime(tzinfo=UTC).timestamp()
            self.add(event.tenant_id, Move(occurred, moved.old_path, moved.new_path))

    async def follow(self, js: JetStreamContext, ns: Namespace) -> None:
        """Subscribe this process to the moves, from ``REMEMBER_SECONDS`` ago on: an ordered
        consumer is ephemeral and per process, so every replica hears every move."""
        start = datetime.now(UTC) - timedelta(seconds=REMEMBER_SECONDS)

        async def on_message(msg: Msg) -> None:
            try:
                self.remember(parse_event(msg.data))
            except PoisonMessage as exc:
                log.warning("unreadable org unit move on %s: %s", msg.subject, exc)

        await js.subscribe(
            ns.subject(MOVED),
            cb=on_message,
            ordered_consumer=True,
            config=ConsumerConfig(deliver_policy=DeliverPolicy.BY_START_TIME, opt_start_time=start),
        )
