"""Every string a public REST request body can carry has a bound in the OpenAPI document
(maxLength, an enum or a fixed format), so oversized input is refused at the edge as a
field error — never stored unbounded or failing in the database as a 500 (a btree index
row holds ~2.7 kB). A new unbounded field fails this test with its path named."""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import pytest

from crm_platform.testing.openapi import SERVICES, service_openapi

Schema = dict[str, Any]
BOUNDED_FORMATS = {"date", "date-time", "uuid", "binary"}


def unbounded(schema: Schema, components: dict[str, Schema], at: str) -> Iterator[str]:
    """Paths of the unbounded strings reachable from ``schema`` (refs followed once)."""
    yield from _walk(schema, components, at, frozenset())


def _walk(
    schema: Schema, components: dict[str, Schema], at: str, seen: frozenset[str]
) -> Iterator[str]:
    if "$ref" in schema:
        name = schema["$ref"].rsplit("/", 1)[-1]
        if name not in seen:
            yield from _walk(components[name], components, at, seen | {name})
        return
    for combinator in ("anyOf", "oneOf", "allOf"):
        for option in schema.get(combinator, ()):
            yield from _walk(option, components, at, seen)
    kind = schema.get("type")
    if kind == "string" and not (
        {"maxLength", "enum", "const"} & schema.keys() or schema.get("format") in BOUNDED_FORMATS
    ):
        yield at
    for name, child in schema.get("properties", {}).items():
        yield from _walk(child, components, f"{at}.{name}", seen)
    if isinstance(schema.get("additionalProperties"), dict):
        yield from _walk(schema["additionalProperties"], components, f"{at}.*", seen)
    if kind == "array" and "items" in schema:
        yield from _walk(schema["items"], components, f"{at}[]", seen)


@pytest.mark.parametrize("service", SERVICES)
def test_every_request_body_string_is_bounded(service: str) -> None:
    spec = service_openapi(service)
    components = spec.get("components", {}).get("schemas", {})
    assert spec["paths"], f"{service} documents no routes"
    found: list[str] = []
    for path, operations in spec["paths"].items():
        for method, operation in operations.items():
            for content in operation.get("requestBody", {}).get("content", {}).values():
                where = f"{method.upper()} {path} body"
                found += unbounded(content.get("schema", {}), components, where)
    assert not found, "unbounded strings:\n" + "\n".join(found)


def test_the_check_finds_an_unbounded_string() -> None:
    components = {"In": {"type": "object", "properties": {"a": {"type": "string"}}}}
    schema = {"type": "array", "items": {"$ref": "#/components/schemas/In"}}
    assert list(unbounded(schema, components, "body")) == ["body[].a"]
    components["In"]["properties"]["a"]["maxLength"] = 10
    assert not list(unbounded(schema, components, "body"))
