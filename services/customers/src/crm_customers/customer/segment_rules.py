"""Segment rule documents: strict validation (pydantic) into a typed tree, and compilation
of that tree into one SQLAlchemy Core WHERE clause over ``customers``.

A document is a node; a node is a group ``{"all": [...]}`` / ``{"any": [...]}``, a negation
``{"not": node}``, or a condition: ``{"field": ..., "op": ..., "value": ...}`` over the
profile, ``{"tag": name}`` (has the tag) or behaviour from the lifecycle facts
(``customer_lifecycle``, fed by order and activity events):

- ``{"last_order_older_than_days": N}``: the customer's last won order is more than N days
  old. A customer who never ordered does not match (nothing is older than N days); under
  ``not`` it does. "Never ordered" is ``lifecycle_stage = PROSPECT``.
- ``{"last_activity_older_than_days": N}``: the last reported activity (opportunity, ticket,
  lead conversion) is more than N days old. A customer with no activity reported yet falls
  back to its ``update_time`` (every write to it or its contacts; tagging does not): the
  last sign of life this service has, and what the rule meant before the facts existed, so
  stored segments keep such customers."""

from __future__ import annotations

import re
import uuid
from collections.abc import Collection, Mapping
from dataclasses import dataclass
from datetime import timedelta
from typing import Any, Literal

import sqlalchemy as sa
from pydantic import ConfigDict, Field, ValidationError
from sqlalchemy.dialects.postgresql import JSONB

from crm_customers.customer import rules, tagging
from crm_customers.customer.models import customer_tags, customers, tags
from crm_customers.lifecycle import rules as lifecycle_rules
from crm_customers.lifecycle.models import customer_lifecycle
from crm_platform.errors import FieldViolation, InvalidArgument, loc_to_field
from crm_platform.validation import InputModel

PROFILE_FIELDS = ("province", "city", "kind", "industry", "lifecycle_stage")
# Fields whose values are upper-case names: kind, lifecycle stage.
_NAMED = {"kind": tuple(rules.KINDS), "lifecycle_stage": lifecycle_rules.STAGES}
CUSTOM_PREFIX = "custom_fields."
CUSTOM_NAME_RE = re.compile(r"^[A-Za-z_][A-Za-z0-9_]{0,62}$")
MAX_CHILDREN = 50
MAX_NODES = 200
MAX_DEPTH = 8
MAX_IN = 100
MAX_DAYS = 36500
MAX_TEXT = 200
Scalar = str | int | float | bool


class _Strict(InputModel):
    model_config = ConfigDict(extra="forbid", strict=True, frozen=True)


class FieldCondition(_Strict):
    field: str = Field(min_length=1, max_length=80)
    op: Literal["eq", "in", "neq", "contains"]
    value: Scalar | list[Scalar]


class TagCondition(_Strict):
    tag: str = Field(max_length=64)


class ActivityCondition(_Strict):
    last_activity_older_than_days: int = Field(ge=1, le=MAX_DAYS)


class OrderCondition(_Strict):
    last_order_older_than_days: int = Field(ge=1, le=MAX_DAYS)


class _All(_Strict):
    all: list[Any] = Field(min_length=1, max_length=MAX_CHILDREN)


class _Any(_Strict):
    any: list[Any] = Field(min_length=1, max_length=MAX_CHILDREN)


class _Not(_Strict):
    not_: Any = Field(alias="not")


@dataclass(frozen=True)
class Group:
    op: Literal["all", "any"]
    children: tuple[Node, ...]


@dataclass(frozen=True)
class Not:
    child: Node


Condition = FieldCondition | TagCondition | ActivityCondition | OrderCondition
Node = Group | Not | Condition

# Which model a node is, told by the key it carries.
_KINDS: tuple[tuple[str, type[_Strict]], ...] = (
    ("all", _All),
    ("any", _Any),
    ("not", _Not),
    ("field", FieldCondition),
    ("tag", TagCondition),
    ("last_activity_older_than_days", ActivityCondition),
    ("last_order_older_than_days", OrderCondition),
)


class _Parser:
    def __init__(self, custom_field_names: Collection[str] | None) -> None:
        self.custom = custom_field_names
        self.violations: list[FieldViolation] = []
        self.nodes = 0

    def fail(self, at: str, description: str) -> None:
        self.violations.append(FieldViolation(at, description))

    def node(self, raw: object, at: str, depth: int) -> Node | None:
        validated = self.validate(raw, at, depth)
        if validated is None:
            return None
        key, parsed = validated
        if isinstance(parsed, _All | _Any):
            children = parsed.all if isinstance(parsed, _All) else parsed.any
            kids = [self.node(c, f"{at}.{key}.{i}", depth + 1) for i, c in enumerate(children)]
            if any(k is None for k in kids):
                return None
            return Group("all" if key == "all" else "any", tuple(k for k in kids if k))
        if isinstance(parsed, _Not):
            child = self.node(parsed.not_, f"{at}.not", depth + 1)
            return None if child is None else Not(child)
        if isinstance(parsed, TagCondition):
            try:
                return TagCondition(tag=tagging.normalise(parsed.tag))
            except ValueError as exc:
                self.fail(f"{at}.tag", str(exc))
                return None
        if isinstance(parsed, FieldCondition):
            return self.field_condition(parsed, at)
        assert isinstance(parsed, ActivityCondition | OrderCondition)
        return parsed

    def validate(self, raw: object, at: str, depth: int) -> tuple[str, _Strict] | None:
        """The node's key and its model, or None with the violations recorded."""
        self.nodes += 1
        if self.nodes > MAX_NODES:
            if self.nodes == MAX_NODES + 1:
                self.fail(at, f"a rule has at most {MAX_NODES} nodes")
            return None
        if depth > MAX_DEPTH:
            self.fail(at, f"rules nest at most {MAX_DEPTH} levels deep")
            return None
        if not isinstance(raw, Mapping):
            self.fail(at, "must be an object: all, any, not, field, tag or last_..._days")
            return None
        kinds = [(key, model) for key, model in _KINDS if key in raw]
        if len(kinds) != 1:
            self.fail(at, "must have exactly one of the keys " + ", ".join(k for k, _ in _KINDS))
            return None
        key, model = kinds[0]
        try:
            return key, model.model_validate(raw)
        except ValidationError as exc:
            for e in exc.errors():
                message = "unknown field" if e["type"] == "extra_forbidden" else e["msg"]
                self.fail(loc_to_field([at, *(str(p) for p in e["loc"])]), message)
            return None

    def check_field(self, cond: FieldCondition, at: str) -> bool:
        """Whether the field is a profile field or a defined custom field."""
        if not cond.field.startswith(CUSTOM_PREFIX):
            if cond.field in PROFILE_FIELDS:
                return False
            allowed = ", ".join([*PROFILE_FIELDS, "custom_fields.<name>"])
            self.fail(f"{at}.field", f"must be one of {allowed}")
            return False
        name = cond.field.removeprefix(CUSTOM_PREFIX)
        if not CUSTOM_NAME_RE.match(name):
            self.fail(f"{at}.field", "is not a custom field name")
        elif self.custom is not None and name not in self.custom:
            self.fail(f"{at}.field", f"no custom field {name!r} is defined")
        return True

    def check_shape(self, cond: FieldCondition, at: str) -> None:
        """One value, or a list for 'in'; a string for 'contains'."""
        if cond.op == "in":
            if not isinstance(cond.value, list) or not 1 <= len(cond.value) <= MAX_IN:
                self.fail(f"{at}.value", f"op 'in' takes a list of 1 to {MAX_IN} values")
        elif isinstance(cond.value, list):
            self.fail(f"{at}.value", f"op {cond.op!r} takes one value, not a list")
        if cond.op == "contains" and not isinstance(cond.value, str):
            self.fail(f"{at}.value", "op 'contains' takes a string")

    def field_condition(self, cond: FieldCondition, at: str) -> FieldCondition | None:
        before = len(self.violations)
        custom = self.check_field(cond, at)
        self.check_shape(cond, at)
        values = cond.value if isinstance(cond.value, list) else [cond.value]
        for i, v in enumerate(values):
            where = f"{at}.value.{i}" if isinstance(cond.value, list) else f"{at}.value"
            if isinstance(v, str) and len(v) > MAX_TEXT:
                self.fail(where, f"at most {MAX_TEXT} characters")
            if not custom and not isinstance(v, str):
                self.fail(where, f"{cond.field} values are strings")
            elif cond.field in _NAMED and str(v).upper() not in _NAMED[cond.field]:
                self.fail(where, "must be one of " + ", ".join(_NAMED[cond.field]))
        if len(self.violations) != before:
            return None
        if cond.field in _NAMED:
            upper = [str(v).upper() for v in values]
            return cond.model_copy(update={"value": upper if cond.op == "in" else upper[0]})
        return cond


def parse(
    document: object, *, at: str = "rule", custom_field_names: Collection[str] | None = None
) -> Node:
    """The typed tree of a rule document, or InvalidArgument naming every bad path (e.g.
    ``rule.all.1.op``). ``custom_field_names``: the tenant's defined custom fields; None
    skips that check (documents already stored)."""
    parser = _Parser(custom_field_names)
    node = parser.node(document, at, 1)
    if parser.violations or node is None:
        raise InvalidArgument.from_violations(parser.violations, reason="SEGMENT_RULE_INVALID")
    return node


def to_document(node: Node) -> dict[str, Any]:
    """The canonical JSON form that is stored (tag names normalised, kinds upper-case)."""
    if isinstance(node, Group):
        return {node.op: [to_document(c) for c in node.children]}
    if isinstance(node, Not):
        return {"not": to_document(node.child)}
    return node.model_dump()


def _field_clause(cond: FieldCondition) -> sa.ColumnElement[bool]:
    values = cond.value if isinstance(cond.value, list) else [cond.value]
    if cond.field.startswith(CUSTOM_PREFIX):
        name = cond.field.removeprefix(CUSTOM_PREFIX)
        doc: sa.Column[Any] = customers.c.custom_fields
        # jsonb containment keeps the value's JSON type: 5 matches 5, not "5".
        has: list[sa.ColumnElement[bool]] = [
            doc.op("@>", return_type=sa.Boolean)(sa.literal({name: v}, JSONB)) for v in values
        ]
        if cond.op == "contains":
            text: sa.ColumnElement[str] = doc[name].astext
            return text.contains(str(cond.value), autoescape=True)
        if cond.op == "neq":
            return sa.not_(has[0])
        return sa.or_(*has) if cond.op == "in" else has[0]
    column: sa.Column[Any] = customers.c[cond.field]
    if cond.field == "kind":
        column_values: list[Any] = [rules.KINDS[str(v)] for v in values]
    else:
        column_values = [str(v) for v in values]
    if cond.op in ("eq", "neq"):
        equal: sa.ColumnElement[bool] = column == column_values[0]  # Column.__eq__ is Any
        return equal if cond.op == "eq" else sa.not_(equal)
    if cond.op == "in":
        return column.in_(column_values)
    return column.contains(str(cond.value), autoescape=True)


def _older_than(days: int) -> sa.ColumnElement[Any]:
    return sa.func.now() - sa.literal(timedelta(days=days), sa.Interval)


def _behaviour_clause(cond: ActivityCondition | OrderCondition) -> sa.ColumnElement[bool]:
    facts = customer_lifecycle
    if isinstance(cond, OrderCondition):
        # EXISTS, not a NULL comparison: never ordered is plainly false, so its ``not`` holds.
        return sa.exists(
            sa.select(sa.literal(1)).where(
                facts.c.customer_id == customers.c.id,
                facts.c.last_order_time < _older_than(cond.last_order_older_than_days),
            )
        )
    last_activity = (
        sa.select(facts.c.last_activity_time)
        .where(facts.c.customer_id == customers.c.id)
        .scalar_subquery()
    )
    since = sa.func.coalesce(last_activity, customers.c.update_time)
    return since < _older_than(cond.last_activity_older_than_days)


def compile_rule(node: Node, tenant_id: uuid.UUID) -> sa.ColumnElement[bool]:
    """One WHERE clause over ``customers`` (tag and behaviour conditions are correlated
    subqueries on the primary keys of the link and facts tables)."""
    if isinstance(node, Group):
        parts = [compile_rule(c, tenant_id) for c in node.children]
        return sa.and_(*parts) if node.op == "all" else sa.or_(*parts)
    if isinstance(node, Not):
        return sa.not_(compile_rule(node.child, tenant_id))
    if isinstance(node, TagCondition):
        return sa.exists(
            sa.select(sa.literal(1))
            .select_from(customer_tags.join(tags, tags.c.id == customer_tags.c.tag_id))
            .where(
                customer_tags.c.customer_id == customers.c.id,
                tags.c.tenant_id == tenant_id,
                tags.c.name == node.tag,
            )
        )
    if isinstance(node, ActivityCondition | OrderCondition):
        return _behaviour_clause(node)
    return _field_clause(node)
