"""Helpers for tests that drive a service over REST."""

from __future__ import annotations

from collections.abc import Mapping

import httpx


async def listed_count(client: httpx.AsyncClient, path: str, headers: Mapping[str, str]) -> int:
    """How many items the list endpoint ``path`` returns (one page of 1000, more than a test
    tenant holds): the same before and after a refused write shows nothing was written."""
    r = await client.get(path, params={"page_size": 1000}, headers=headers)
    assert r.status_code == 200, r.text
    items: list[object] = r.json()[path.rsplit("/", 1)[-1].replace("-", "_")]
    return len(items)
