"""Handlers of the conversion saga's commands (crm.cmd.customers.*). The consumer runner
owns the transaction and the inbox; these decode the command and call the service."""

from __future__ import annotations

import uuid
from datetime import UTC, datetime

from sqlalchemy.ext.asyncio import AsyncConnection

from crm.customers.v1 import commands_pb2
from crm_customers.conversion import service
from crm_platform.consumers import EventHandler
from crm_platform.events import PoisonMessage, ReceivedEvent
from crm_platform.outbox import deferred


def _context(event: ReceivedEvent) -> service.Context:
    envelope = event.envelope
    return service.Context(
        tenant_id=uuid.UUID(envelope.tenant_id),
        correlation_id=envelope.correlation_id,
        causation_id=envelope.id,
        org_path=envelope.org_path,
    )


def prepare_handler(phone_region: str) -> EventHandler:
    async def on_prepare_conversion(conn: AsyncConnection, event: ReceivedEvent) -> None:
        cmd = event.payload
        if not isinstance(cmd, commands_pb2.PrepareConversion):
            raise PoisonMessage(f"not a PrepareConversion: {type(cmd).__name__}")
        # The step's events (customer and contact created, the reply): one outbox statement.
        async with deferred(conn):
            await service.prepare(
                conn=conn,
                ctx=_context(event),
                cmd=cmd,
                phone_region=phone_region,
                now=datetime.now(UTC),
            )

    return on_prepare_conversion


async def on_undo_conversion(conn: AsyncConnection, event: ReceivedEvent) -> None:
    cmd = event.payload
    if not isinstance(cmd, commands_pb2.UndoConversion):
        raise PoisonMessage(f"not an UndoConversion: {type(cmd).__name__}")
    await service.undo(conn=conn, ctx=_context(event), cmd=cmd)
