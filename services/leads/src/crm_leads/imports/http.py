"""Public REST adapter for lead imports: template download, upload (starts a job), progress,
and the rejected-rows report."""

from __future__ import annotations

import csv
import io
import tempfile
from collections.abc import AsyncIterator
from typing import Annotated, Any, Literal

from fastapi import APIRouter, Query, Request, Response
from fastapi.responses import StreamingResponse

from crm_leads.imports import store
from crm_leads.imports.columns import COLUMNS, TEMPLATE_EXAMPLE, template_csv, template_header
from crm_leads.imports.runner import ImportRunner
from crm_leads.imports.store import ImportState
from crm_leads.imports.upload import XLSX_MEDIA_TYPE, UploadForm, receive
from crm_leads.lead.rules import SOURCE_RE
from crm_leads.settings import Settings
from crm_platform.auth import WRITE_ROLES
from crm_platform.errors import FieldViolation, InvalidArgument
from crm_platform.http import CurrentPage, CurrentPrincipal, paged
from crm_platform.ids import parse_id
from crm_platform.protos import timestamp
from crm_platform.runtime import Runtime
from crm_platform.validation import clean_text

Json = dict[str, Any]
PREFIX = "/v1/lead-imports"
RUNNER = "import_runner"
_UPLOAD_BODY = {
    "requestBody": {
        "required": True,
        "content": {
            "text/csv": {"schema": {"type": "string", "format": "binary"}},
            XLSX_MEDIA_TYPE: {"schema": {"type": "string", "format": "binary"}},
        },
        "description": "The file itself (not multipart): CSV in UTF-8 or GBK, or XLSX, "
        "with the template's header row.",
    }
}


def runner(rt: Runtime) -> ImportRunner:
    """One runner per service process, shared by the upload endpoint (to wake it) and the
    background job."""
    if RUNNER not in rt.extras:
        assert isinstance(rt.settings, Settings)
        s = rt.settings
        rt.extras[RUNNER] = ImportRunner(
            rt.db,
            phone_region=s.default_phone_region,
            slice_rows=s.import_slice_rows,
            lease_seconds=s.import_lease_seconds,
            workers=s.import_workers,
        )
    result: ImportRunner = rt.extras[RUNNER]
    return result


def job_json(row: Any) -> Json:
    state = ImportState(row.state)
    return {
        "id": str(row.id),
        "state": state.name,
        "file_name": row.file_name,
        "format": row.format,
        "encoding": row.encoding,
        "source": row.source,
        "campaign": row.campaign,
        "size_bytes": row.size_bytes,
        "owner_org_id": str(row.owner_org_id),
        "owner_org_path": row.owner_org_path,
        "created_by": row.created_by,
        # rows_total counts file lines until the job finishes, then records exactly.
        "rows_total": row.rows_total,
        "rows_done": row.rows_done,
        "rows_created": row.rows_created,
        "rows_merged": row.rows_merged,
        "rows_invalid": row.rows_invalid,
        "error": row.error,
        "attempts": row.attempts,
        "create_time": timestamp(row.create_time).ToJsonString(),
        "update_time": timestamp(row.update_time).ToJsonString(),
        "finish_time": timestamp(row.finish_time).ToJsonString() if row.finish_time else None,
        "errors_url": f"{PREFIX}/{row.id}/errors",
    }


def router(rt: Runtime) -> APIRouter:
    r = APIRouter(tags=["imports"])

    @r.get(f"{PREFIX}:template", response_class=Response)
    async def download_import_template(
        principal: CurrentPrincipal,
        file_format: Annotated[Literal["csv", "xlsx"], Query(alias="format")] = "csv",
        language: Annotated[Literal["en", "zh"], Query()] = "en",
    ) -> Response:
        """The import template: the header row (English or Chinese) and one example row."""
        if file_format == "csv":
            return Response(
                template_csv(language),
                media_type="text/csv; charset=utf-8",
                headers={"Content-Disposition": 'attachment; filename="leads-template.csv"'},
            )
        return Response(
            _template_xlsx(language),
            media_type=XLSX_MEDIA_TYPE,
            headers={"Content-Disposition": 'attachment; filename="leads-template.xlsx"'},
        )

    @r.post(PREFIX, status_code=202, openapi_extra=_UPLOAD_BODY)
    async def create_lead_import(
        request: Request,
        response: Response,
        principal: CurrentPrincipal,
        file_name: Annotated[str, Query(max_length=200)] = "upload",
        file_format: Annotated[Literal["", "csv", "xlsx"], Query(alias="format")] = "",
        encoding: Annotated[str, Query(max_length=20, description="utf-8 or gbk")] = "",
        source: Annotated[str, Query(max_length=32)] = "import",
        campaign: Annotated[str, Query(max_length=200)] = "",
    ) -> Json:
        """Upload a file and start its import. The job runs in the background: poll
        ``GET /v1/lead-imports/{id}`` for progress."""
        principal.require_any(WRITE_ROLES)
        form = UploadForm(
            file_name=clean_text(file_name) or "upload",
            file_format=file_format or _format_from(request.headers.get("content-type", "")),
            encoding=encoding,
            source=_source(source),
            campaign=clean_text(campaign),
        )
        async with rt.db.unit_of_work() as conn:
            job_id = await receive(conn=conn, principal=principal, form=form, body=request.stream())
        runner(rt).wake.set()
        async with rt.db.read() as conn:
            row = await store.get(conn=conn, principal=principal, job_id=job_id)
        response.headers["Location"] = f"{PREFIX}/{job_id}"
        return job_json(row)

    @r.get(PREFIX)
    async def list_lead_imports(principal: CurrentPrincipal, page: CurrentPage) -> Json:
        """Imports of the caller's subtree, newest first."""
        async with rt.db.read() as conn:
            rows = await store.list_visible(conn=conn, principal=principal, page=page)
        return paged("imports", rows, page, job_json)

    @r.get(PREFIX + "/{import_id}")
    async def get_lead_import(import_id: str, principal: CurrentPrincipal) -> Json:
        async with rt.db.read() as conn:
            row = await store.get(conn=conn, principal=principal, job_id=parse_id(import_id))
        return job_json(row)

    @r.get(PREFIX + "/{import_id}/errors", response_class=StreamingResponse)
    async def download_lead_import_errors(
        import_id: str, principal: CurrentPrincipal
    ) -> StreamingResponse:
        """The rejected rows as CSV: line number, the fields at fault, why, and the row as
        it was in the file (fix and re-import just these rows)."""
        async with rt.db.read() as conn:
            job = await store.get(conn=conn, principal=principal, job_id=parse_id(import_id))
        return StreamingResponse(
            _error_report(rt, job.id),
            media_type="text/csv; charset=utf-8",
            headers={"Content-Disposition": f'attachment; filename="import-{job.id}-errors.csv"'},
        )

    return r


async def _error_report(rt: Runtime, job_id: Any) -> AsyncIterator[bytes]:
    out = io.StringIO()
    writer = csv.writer(out)
    writer.writerow(["line", "fields", "errors", *COLUMNS])
    yield ("\ufeff" + out.getvalue()).encode("utf-8")
    async with rt.db.read() as conn:
        async for rows in store.errors(conn=conn, job_id=job_id):
            out.seek(0)
            out.truncate()
            for row in rows:
                writer.writerow(
                    [row.row_no, "; ".join(row.fields), "; ".join(row.messages), *row.raw]
                )
            yield out.getvalue().encode("utf-8")


def _format_from(content_type: str) -> str:
    media = content_type.split(";")[0].strip().lower()
    if media == XLSX_MEDIA_TYPE:
        return "xlsx"
    # Anything else is decided by the content: a ZIP archive is a workbook, else CSV text
    # (browsers send CSV files under several media types).
    return ""


def _source(value: str) -> str:
    source = clean_text(value).lower()
    if not SOURCE_RE.fullmatch(source):
        raise InvalidArgument.from_violations(
            [FieldViolation("source", "lower-case letters, digits and '_'")],
            reason="IMPORT_FORM_INVALID",
        )
    return source


def _template_xlsx(language: str) -> bytes:
    import openpyxl

    book = openpyxl.Workbook(write_only=True)
    sheet = book.create_sheet("leads")
    sheet.append(template_header(language))
    sheet.append(TEMPLATE_EXAMPLE)
    with tempfile.TemporaryFile() as file:
        book.save(file)
        file.seek(0)
        return file.read()
