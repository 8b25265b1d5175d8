"""The import file's columns: names, accepted header spellings, the downloadable template.
Pure: no I/O."""

from __future__ import annotations

import csv
import io
import operator
from collections.abc import Callable
from dataclasses import dataclass

from crm_platform.errors import FieldViolation, InvalidArgument
from crm_platform.validation import clean_text

# Template order. Every column but full_name is optional; a row needs a phone, an email or
# an open_id (the same rule as every other capture channel).
COLUMNS = (
    "full_name",
    "phone",
    "email",
    "company",
    "province",
    "city",
    "open_id",
    "union_id",
    "source",
    "campaign",
    "product_interest",
)
# The header of the Chinese template, and what spreadsheets exported from other CRMs call
# the same columns. Compared after NFKC folding and lower-casing.
ZH_HEADER = {
    "full_name": "姓名",
    "phone": "手机",
    "email": "邮箱",
    "company": "公司",
    "province": "省份",
    "city": "城市",
    "open_id": "openid",
    "union_id": "unionid",
    "source": "来源",
    "campaign": "活动",
    "product_interest": "意向产品",
}
_ALIASES = {
    **{name: name for name in COLUMNS},
    **{zh: name for name, zh in ZH_HEADER.items()},
    "name": "full_name",
    "fullname": "full_name",
    "full name": "full_name",
    "mobile": "phone",
    "phone number": "phone",
    "手机号": "phone",
    "手机号码": "phone",
    "电话": "phone",
    "e-mail": "email",
    "邮件": "email",
    "电子邮箱": "email",
    "company name": "company",
    "公司名称": "company",
    "省": "province",
    "市": "city",
    "product": "product_interest",
    "渠道": "source",
    "意向": "product_interest",
}
CONTACT_COLUMNS = ("phone", "email", "open_id")


@dataclass(frozen=True)
class Header:
    """Where each known column is in a file's rows (None: the file has no such column)."""

    positions: dict[str, int]
    width: int

    @property
    def padded_width(self) -> int:
        """Rows shorter than this are padded with "" before ``picker`` reads them."""
        return self.width + 1

    def picker(self) -> Callable[[list[str]], tuple[str, ...]]:
        """One C call returning a padded row's cells in ``COLUMNS`` order; a column the file
        lacks reads the padding cell ("")."""
        return operator.itemgetter(*(self.positions.get(name, self.width) for name in COLUMNS))


def parse_header(cells: list[str]) -> Header:
    """The column mapping, or InvalidArgument naming every unknown, repeated or missing
    column (field ``header``), so a user fixes the file in one go."""
    violations: list[FieldViolation] = []
    positions: dict[str, int] = {}
    for index, cell in enumerate(cells):
        label = clean_text(cell.lstrip("\ufeff")).lower()
        if not label:
            continue
        name = _ALIASES.get(label)
        if name is None:
            violations.append(
                FieldViolation("header", f"unknown column {cell!r} (column {index + 1})")
            )
        elif name in positions:
            violations.append(FieldViolation("header", f"column {name!r} appears twice"))
        else:
            positions[name] = index
    if "full_name" not in positions:
        violations.append(FieldViolation("header", "missing column 'full_name' (or '姓名')"))
    if not any(name in positions for name in CONTACT_COLUMNS):
        violations.append(
            FieldViolation("header", "needs at least one of the columns phone, email, open_id")
        )
    if violations:
        expected = ", ".join(COLUMNS)
        violations.append(FieldViolation("header", f"the template's columns are: {expected}"))
        raise InvalidArgument.from_violations(violations, reason="IMPORT_HEADER_INVALID")
    return Header(positions, len(cells))


def template_header(language: str) -> list[str]:
    return [ZH_HEADER[name] for name in COLUMNS] if language == "zh" else list(COLUMNS)


TEMPLATE_EXAMPLE = [
    "Zhang San",
    "13812345678",
    "zhang.san@example.com",
    "Hangzhou Example Trading Co., Ltd.",
    "Zhejiang",
    "Hangzhou",
    "",
    "",
    "exhibition",
    "spring-expo-2026",
    "EV-200",
]


def template_csv(language: str) -> bytes:
    """UTF-8 with a byte order mark, so Excel shows the Chinese header correctly."""
    out = io.StringIO()
    writer = csv.writer(out)
    writer.writerow(template_header(language))
    writer.writerow(TEMPLATE_EXAMPLE)
    return ("\ufeff" + out.getvalue()).encode("utf-8")
