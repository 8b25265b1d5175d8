"""Reading an import file: encoding detection, CSV and XLSX records. Pure apart from reading
the file object it is given.

Records are numbered by file line (the header is line 1), which is what the error report
shows and what a spreadsheet user sees."""

from __future__ import annotations

import codecs
import csv
import datetime as dt
import io
from collections.abc import Iterator
from typing import IO, Any

from crm_platform.errors import FieldViolation, InvalidArgument

# Both accept ASCII alike; UTF-8 is tried first because random GBK text is almost never valid
# UTF-8, while the reverse is not true. GB18030 is the superset of GBK Windows writes.
ENCODINGS = ("utf-8", "gb18030")
ENCODING_NAMES = {"utf-8": "utf-8", "utf8": "utf-8", "gbk": "gb18030", "gb18030": "gb18030"}
# A field longer than this is not a lead's field: most likely a binary file or a broken quote.
MAX_FIELD = 4096
XLSX_MAGIC = b"PK\x03\x04"

csv.field_size_limit(MAX_FIELD)


def file_error(message: str, reason: str = "IMPORT_FILE_INVALID") -> InvalidArgument:
    return InvalidArgument.from_violations([FieldViolation("file", message)], reason=reason)


class EncodingCheck:
    """Decodes an upload chunk by chunk as it streams in, so a file that is not valid text
    in its encoding is refused before a single row is imported; counts lines on the way."""

    def __init__(self, encoding: str) -> None:
        self.encoding = encoding
        self._decoder = codecs.getincrementaldecoder(encoding)(errors="strict")
        self.lines = 0
        self._bytes = 0
        self._unterminated = False

    def feed(self, chunk: bytes, *, final: bool = False) -> str:
        try:
            text = self._decoder.decode(chunk, final)
        except UnicodeDecodeError as exc:
            # exc.start is relative to what the decoder held back from earlier chunks too; a
            # held-back sequence is at most 3 bytes, so the line is exact.
            line = self.lines + chunk[: max(0, exc.start)].count(b"\n") + 1
            raise file_error(
                f"not valid {self.encoding} text on line {line}; save the file as UTF-8 or GBK",
                reason="IMPORT_ENCODING_INVALID",
            ) from None
        self._bytes += len(chunk)
        self.lines += chunk.count(b"\n")
        if chunk:
            self._unterminated = not chunk.endswith(b"\n")
        return text

    @property
    def data_rows(self) -> int:
        """Lines after the header: the row count unless quoted fields span lines."""
        return max(0, self.lines + int(self._unterminated) - 1)


def detect_encoding(head: bytes, *, complete: bool) -> str:
    """The encoding of a CSV upload from its first bytes (``complete``: the whole file)."""
    if head.startswith(codecs.BOM_UTF8):
        return "utf-8"
    for encoding in ENCODINGS:
        try:
            codecs.getincrementaldecoder(encoding)(errors="strict").decode(head, complete)
        except UnicodeDecodeError:
            continue
        return encoding
    raise file_error(
        "the file is neither UTF-8 nor GBK text (is it a CSV file?)",
        reason="IMPORT_ENCODING_INVALID",
    )


def csv_records(binary: IO[bytes], encoding: str) -> Iterator[tuple[int, list[str]]]:
    """(line, cells) for every record, the header first. Blank lines are skipped."""
    # utf-8-sig drops a byte order mark (Excel writes one) and is plain UTF-8 otherwise.
    codec = "utf-8-sig" if encoding == "utf-8" else encoding
    text = io.TextIOWrapper(binary, encoding=codec, newline="", errors="strict")
    reader = csv.reader(text, strict=False)
    while True:
        try:
            cells = next(reader)
        except StopIteration:
            return
        except (csv.Error, UnicodeDecodeError) as exc:
            raise file_error(f"line {reader.line_num}: {exc}") from None
        if cells:
            yield reader.line_num, cells


def xlsx_records(binary: IO[bytes]) -> Iterator[tuple[int, list[str]]]:
    """(row, cells) of the first worksheet, values as text (numbers without ".0", so a
    phone typed as a number stays a phone)."""
    # Imported here: openpyxl is heavy and only XLSX imports need it.
    import openpyxl

    # openpyxl raises whatever its ZIP and XML layers raise on a damaged workbook (BadZipFile,
    # KeyError, XML syntax errors, ...): any of them means the same thing to the user.
    try:
        book = openpyxl.load_workbook(binary, read_only=True, data_only=True)
    except Exception as exc:
        raise file_error(f"not a readable XLSX workbook ({exc})") from None
    try:
        rows = book.worksheets[0].iter_rows(values_only=True)
        number = 0
        while True:
            try:
                values = next(rows)
            except StopIteration:
                return
            except Exception as exc:
                raise file_error(f"row {number + 1}: unreadable ({exc})") from None
            number += 1
            cells = [_cell_text(value) for value in values]
            while cells and not cells[-1]:
                cells.pop()
            if cells:
                yield number, cells
    finally:
        book.close()


def _cell_text(value: Any) -> str:
    if value is None:
        return ""
    if isinstance(value, bool):
        return "TRUE" if value else "FALSE"
    if isinstance(value, float) and value.is_integer():
        return str(int(value))
    if isinstance(value, dt.datetime | dt.date):
        return value.isoformat()
    return str(value)
