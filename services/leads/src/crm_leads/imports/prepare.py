"""Turning a slice of file rows into what one database transaction writes: validated,
normalised leads, de-duplicated within the slice, scored and checked, plus the rejected rows
with every reason. Pure: no I/O (runs in worker processes while earlier slices are being
written).

Duplicates across slices and against existing leads are resolved by the database
(crm_leads.imports.bulk), through the same ``lead_keys`` constraint single captures use."""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass, field

from crm_leads.imports.columns import Header
from crm_leads.lead import cleansing
from crm_leads.lead.rules import NewIntent, NewLead, validate_intent, validate_new_lead
from crm_leads.scoring.rules import Scorer
from crm_platform.errors import InvalidArgument
from crm_platform.validation import NUL

# The fields a later row of the same person fills when the first row left them empty (the
# same rule a merge into an existing lead follows).
FILLABLE = ("company", "province", "city", "email", "phone", "open_id", "union_id")


# What a slice hands to the writer is plain tuples, not NamedTuples: slices cross a process
# boundary (crm_leads.imports.workers), and pickling a NamedTuple runs Python code for every
# object on both sides — 4-5x a plain tuple's C path (~24 -> ~5 µs per row for dumps + loads).
# The writer unpacks them (``lead, keys, intents, ... = person``).

RowError = tuple[int, list[str], list[str], list[str]]  # row_no, fields, messages, raw

# A NewLead's fields, in its order (``NewLead(*lead)`` rebuilds one).
LEAD_FIELDS = (
    "full_name",
    "phone",
    "email",
    "company",
    "province",
    "city",
    "source",
    "open_id",
    "union_id",
)
LEAD_INDEX = {name: n for n, name in enumerate(LEAD_FIELDS)}
LeadFields = tuple[str, str, str, str, str, str, str, str, str]
Intent = tuple[str, str, str]  # source, campaign, product_interest
Key = tuple[str, str]  # (kind, value)

# One new person of the slice: the lead to create (unless the database already knows one of
# its keys), its keys, an intent per file row, its score, grade and cleansing verdict, and —
# only when rows are kept apart (``group=False``) — the row, for the error report:
# (lead, keys, intents, score, grade, verification, verification_note, row_no, raw).
Person = tuple[
    LeadFields, tuple[Key, ...], tuple[Intent, ...], int, str, int, str, int, tuple[str, ...]
]


@dataclass
class _Group:
    """One person while the slice is read: the first row's lead, filled in by later rows."""

    lead: NewLead
    # The (kind, value) dedup keys this person owns in the slice, unique across groups.
    keys: list[tuple[str, str]]
    intents: list[NewIntent] = field(default_factory=list)
    row_no: int = 0
    raw: tuple[str, ...] = ()


@dataclass
class Prepared:
    groups: list[Person]
    errors: list[RowError]
    rows: int  # file rows consumed (valid or not)
    last_row_no: int  # the file line of the last one


@dataclass(frozen=True)
class Defaults:
    """What the import form applies to rows that leave a column empty."""

    source: str
    campaign: str
    phone_region: str


def prepare(
    records: Iterable[tuple[int, list[str]]],
    header: Header,
    defaults: Defaults,
    scorer: Scorer,
    *,
    group: bool = True,
) -> Prepared:
    """``group``: fold rows of the same person (by system key) into one, as the set-based
    writer wants; off, every valid row stays its own (for tenant rules, applied row by row
    by the single-capture path)."""
    groups: list[_Group] = []
    by_key: dict[tuple[str, str], _Group] = {}
    errors: list[RowError] = []
    rows = 0
    last = 0
    pick = header.picker()
    padded = header.padded_width
    for row_no, cells in records:
        rows += 1
        last = row_no
        raw = cells
        if len(cells) < padded:
            cells = cells + [""] * (padded - len(cells))
        (
            full_name,
            phone,
            email,
            company,
            province,
            city,
            open_id,
            union_id,
            source,
            campaign,
            product_interest,
        ) = pick(cells)
        try:
            lead = validate_new_lead(
                full_name=full_name,
                phone=phone,
                email=email,
                company=company,
                province=province,
                city=city,
                source=source or defaults.source,
                open_id=open_id,
                union_id=union_id,
                phone_region=defaults.phone_region,
            )
            intent = validate_intent(
                source=lead.source,
                campaign=campaign or defaults.campaign,
                product_interest=product_interest,
            )
        except InvalidArgument as exc:
            errors.append(
                (
                    row_no,
                    [v.field for v in exc.violations],
                    [v.description for v in exc.violations],
                    _reportable(raw[: header.width]),
                )
            )
            continue
        keys = lead.dedup_keys()
        if not group:
            groups.append(_Group(lead, keys, [intent], row_no, tuple(raw[: header.width])))
            continue
        person = next((by_key[k] for k in keys if k in by_key), None)
        if person is None:
            person = _Group(lead, [])
            groups.append(person)
        else:
            _fill(person, lead)
        person.intents.append(intent)
        # Each key belongs to the first person seen with it; a later row's new keys (a
        # second email, say) join the person it merged into, as a single capture's would.
        for key in keys:
            if key not in by_key:
                by_key[key] = person
                person.keys.append(key)
    people = [_finish(group, scorer, defaults.phone_region) for group in groups]
    return Prepared(people, errors, rows, last)


def _fill(group: _Group, lead: NewLead) -> None:
    current = group.lead
    fills = {
        name: getattr(lead, name)
        for name in FILLABLE
        if not getattr(current, name) and getattr(lead, name)
    }
    if fills:
        group.lead = NewLead(**{**current.__dict__, **fills})


def _finish(group: _Group, scorer: Scorer, region: str) -> Person:
    lead = group.lead
    intents = tuple((i.source, i.campaign, i.product_interest) for i in group.intents)
    scored = scorer.score_profile(
        lead,
        intent_count=len(intents),
        campaign_responses=sum(1 for i in intents if i[1]),
        product_interests=sum(1 for i in intents if i[2]),
    )
    verdict = cleansing.check(lead, region=region)
    return (
        (
            lead.full_name,
            lead.phone,
            lead.email,
            lead.company,
            lead.province,
            lead.city,
            lead.source,
            lead.open_id,
            lead.union_id,
        ),
        tuple(group.keys),
        intents,
        scored.score,
        scored.grade,
        verdict.verification,
        verdict.note,
        group.row_no,
        group.raw,
    )


def _reportable(cells: list[str]) -> list[str]:
    """The row as the error report keeps it: a NUL (the row's error, as no text column can
    hold one) shows as U+FFFD."""
    if NUL not in "".join(cells):
        return cells
    return [cell.replace(NUL, "\ufffd") for cell in cells]
