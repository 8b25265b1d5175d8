"""Helpers for tests that drive a service over REST."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import httpx


async def listed_count(client: httpx.AsyncClient, path: str, headers: Mapping[str, str]) -> int:
    """How many items the list endpoint ``path`` returns (one page of 1000, more than a test
    tenant holds): the same before and after a refused write shows nothing was written."""
    r = await client.get(path, params={"page_size": 1000}, headers=headers)
    assert r.status_code == 200, r.text
    items: list[object] = r.json()[path.rsplit("/", 1)[-1].replace("-", "_")]
    return len(items)


async def all_pages(
    client: httpx.AsyncClient, path: str, headers: Mapping[str, str], page_size: int = 2
) -> list[dict[str, Any]]:
    """Every item of the list endpoint ``path``, following ``next_page_token`` with small
    pages so the paging itself is exercised; each page must honour ``page_size``."""
    key = path.rsplit("/", 1)[-1].replace("-", "_")
    items: list[dict[str, Any]] = []
    token = ""
    while True:
        r = await client.get(
            path, params={"page_size": page_size, "page_token": token}, headers=headers
        )
        assert r.status_code == 200, r.text
        body = r.json()
        assert len(body[key]) <= page_size
        items += body[key]
        token = body["next_page_token"]
        if not token:
            return items


async def assert_subtree_only(
    client: httpx.AsyncClient,
    path: str,
    record_id: str,
    *,
    readers: list[Mapping[str, str]],
    sibling: Mapping[str, str],
    reason: str,
) -> None:
    """``path/record_id`` is readable with each of ``readers``' headers; for ``sibling`` it is
    a 404 with ``reason`` (not 403: existence does not leak) and absent from its list."""
    for headers in readers:
        r = await client.get(f"{path}/{record_id}", headers=headers)
        assert r.status_code == 200, r.text
    r = await client.get(f"{path}/{record_id}", headers=sibling)
    assert r.status_code == 404
    assert r.json()["reason"] == reason
    listed = await client.get(path, params={"page_size": 1000}, headers=sibling)
    key = path.rsplit("/", 1)[-1].replace("-", "_")
    assert record_id not in {x["id"] for x in listed.json()[key]}
