"""Callers waiting for conversions to end (long-poll). Every replica LISTENs on one
PostgreSQL channel; a conversion's last step NOTIFYs in its transaction, so the waiter is
woken on commit whichever replica ran the step. Waiters also re-read the row every
``POLL_SECONDS``, so a lost listener connection only slows them down."""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import Iterator
from typing import Any

import asyncpg

from crm_leads.conversion.service import NOTIFY_CHANNEL

log = logging.getLogger(__name__)
# Only a fallback (NOTIFY wakes waiters): rare, so 1,000 waiters cost 200 reads/s, not 1,000.
POLL_SECONDS = 5.0
RECONNECT_SECONDS = 1.0


def listener_dsn(db_url: str) -> str:
    """asyncpg's own DSN (no SQLAlchemy driver suffix)."""
    scheme, sep, rest = db_url.partition("://")
    return f"postgresql://{rest}" if sep and scheme.startswith("postgres") else db_url


def _setter(event: asyncio.Event) -> Any:
    def on_terminated(_conn: Any) -> None:
        event.set()

    return on_terminated


class ConversionWaiters:
    def __init__(self, dsn: str) -> None:
        self._dsn = dsn
        self._waiting: dict[str, set[asyncio.Event]] = {}
        self._task: asyncio.Task[None] | None = None

    def start(self) -> None:
        self._task = asyncio.create_task(self._listen(), name="conversion-listener")

    async def stop(self) -> None:
        if self._task is not None:
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._task

    @contextlib.contextmanager
    def watch(self, conversion_id: str) -> Iterator[asyncio.Event]:
        event = asyncio.Event()
        self._waiting.setdefault(conversion_id, set()).add(event)
        try:
            yield event
        finally:
            events = self._waiting.get(conversion_id)
            if events is not None:
                events.discard(event)
                if not events:
                    del self._waiting[conversion_id]

    def _notified(self, _conn: Any, _pid: int, _channel: str, payload: str) -> None:
        for event in self._waiting.get(payload, ()):
            event.set()

    async def _listen(self) -> None:
        while True:
            conn: asyncpg.Connection | None = None
            try:
                conn = await asyncpg.connect(self._dsn)
                closed = asyncio.Event()
                conn.add_termination_listener(_setter(closed))
                await conn.add_listener(NOTIFY_CHANNEL, self._notified)
                # Whatever ended while we were not listening: wake everyone to re-read.
                for events in self._waiting.values():
                    for event in events:
                        event.set()
                await closed.wait()
            except asyncio.CancelledError:
                if conn is not None:
                    with contextlib.suppress(Exception):
                        await asyncio.shield(conn.close(timeout=2))
                raise
            except Exception:
                log.warning(
                    "conversion listener lost; waiters poll until it is back", exc_info=True
                )
            await asyncio.sleep(RECONNECT_SECONDS)
