"""Receiving an import file: checked while it streams in (format, encoding, header), stored
in chunks with its job in one transaction. A file refused here leaves nothing behind."""

from __future__ import annotations

import csv
import io
import tempfile
import uuid
from collections.abc import AsyncIterator
from dataclasses import dataclass

from sqlalchemy.ext.asyncio import AsyncConnection

from crm_leads.imports import store
from crm_leads.imports.columns import parse_header
from crm_leads.imports.reader import (
    ENCODING_NAMES,
    XLSX_MAGIC,
    EncodingCheck,
    detect_encoding,
    file_error,
    xlsx_records,
)
from crm_platform.auth import Principal

SNIFF_BYTES = 64 * 1024
XLSX_MEDIA_TYPE = "application/vnd.openxmlformats-officedocument.spreadsheetml.sheet"


@dataclass(frozen=True)
class UploadForm:
    file_name: str
    file_format: str  # "", "csv" or "xlsx" ("": from the content)
    encoding: str  # "", "utf-8", "gbk" or "gb18030" ("": detected)
    source: str
    campaign: str


async def receive(
    *,
    conn: AsyncConnection,
    principal: Principal,
    form: UploadForm,
    body: AsyncIterator[bytes],
) -> uuid.UUID:
    """The new job's id; InvalidArgument (nothing stored) for a file that cannot import."""
    chunks = _rechunk(body, store.CHUNK_BYTES)
    head = await anext(chunks, b"")
    if not head:
        raise file_error("the file is empty")
    file_format = form.file_format or ("xlsx" if head.startswith(XLSX_MAGIC) else "csv")
    if file_format == "xlsx":
        if not head.startswith(XLSX_MAGIC):
            raise file_error("not an XLSX workbook (an XLSX file is a ZIP archive)")
        return await _receive_xlsx(conn, principal, form, head, chunks)
    complete = len(head) < store.CHUNK_BYTES
    encoding = ENCODING_NAMES.get(form.encoding.lower(), "") if form.encoding else ""
    if form.encoding and not encoding:
        raise file_error(f"unsupported encoding {form.encoding!r}; use utf-8 or gbk")
    encoding = encoding or detect_encoding(head[:SNIFF_BYTES], complete=complete)
    check = EncodingCheck(encoding)
    _check_csv_header(check.feed(head, final=complete))
    job_id = await store.create(
        conn=conn,
        principal=principal,
        file_name=form.file_name,
        file_format="csv",
        encoding=encoding,
        source=form.source,
        campaign=form.campaign,
    )
    size = len(head)
    await store.add_chunk(conn=conn, job_id=job_id, seq=0, data=head)
    seq = 1
    async for chunk in chunks:
        check.feed(chunk)
        await store.add_chunk(conn=conn, job_id=job_id, seq=seq, data=chunk)
        size += len(chunk)
        seq += 1
    check.feed(b"", final=True)
    await store.uploaded(conn=conn, job_id=job_id, size_bytes=size, rows_total=check.data_rows)
    return job_id


def _check_csv_header(text: str) -> None:
    first = next(csv.reader(io.StringIO(text.lstrip("\ufeff"))), None)
    if not first:
        raise file_error("the file has no header row")
    parse_header(first)


async def _receive_xlsx(
    conn: AsyncConnection,
    principal: Principal,
    form: UploadForm,
    head: bytes,
    chunks: AsyncIterator[bytes],
) -> uuid.UUID:
    # A workbook is a ZIP archive, readable only whole: spooled to disk, checked, then stored.
    with tempfile.TemporaryFile(prefix="crm-upload-") as file:
        file.write(head)
        async for chunk in chunks:
            file.write(chunk)
        size = file.tell()
        file.seek(0)
        records = xlsx_records(file)
        first = next(records, None)
        if first is None:
            raise file_error("the workbook's first sheet is empty")
        parse_header(first[1])
        rows = sum(1 for _ in records)
        job_id = await store.create(
            conn=conn,
            principal=principal,
            file_name=form.file_name,
            file_format="xlsx",
            encoding="",
            source=form.source,
            campaign=form.campaign,
        )
        file.seek(0)
        for seq, data in enumerate(iter(lambda: file.read(store.CHUNK_BYTES), b"")):
            await store.add_chunk(conn=conn, job_id=job_id, seq=seq, data=data)
    await store.uploaded(conn=conn, job_id=job_id, size_bytes=size, rows_total=rows)
    return job_id


async def _rechunk(body: AsyncIterator[bytes], size: int) -> AsyncIterator[bytes]:
    """Fixed-size chunks (the last may be shorter) out of whatever the server hands us."""
    buffer = bytearray()
    async for part in body:
        buffer += part
        while len(buffer) >= size:
            yield bytes(buffer[:size])
            del buffer[:size]
    if buffer:
        yield bytes(buffer)
