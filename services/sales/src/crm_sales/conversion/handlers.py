"""Consumers of the conversion saga's commands to sales (crm_sales.consumers registers
them). The consumer runner owns the transaction and the inbox; these only decode."""

from __future__ import annotations

from sqlalchemy.ext.asyncio import AsyncConnection

from crm.sales.v1 import commands_pb2
from crm_platform.events import PoisonMessage, ReceivedEvent
from crm_sales.conversion import service


async def on_create_conversion_opportunities(conn: AsyncConnection, event: ReceivedEvent) -> None:
    command = event.payload
    if not isinstance(command, commands_pb2.CreateConversionOpportunities):
        raise PoisonMessage(f"unexpected payload {type(command).__name__}")
    await service.create_conversion_opportunities(conn=conn, event=event, command=command)


async def on_undo_conversion(conn: AsyncConnection, event: ReceivedEvent) -> None:
    command = event.payload
    if not isinstance(command, commands_pb2.UndoConversion):
        raise PoisonMessage(f"unexpected payload {type(command).__name__}")
    await service.undo_conversion(conn=conn, event=event, command=command)
