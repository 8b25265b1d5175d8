"""PathMoves: a credential issued before an org unit moved is read with the unit's path of
now; one issued after, or of another tenant or subtree, is left alone."""

from __future__ import annotations

import time
import uuid

from crm_platform.auth import Principal
from crm_platform.org_moves import REMEMBER_SECONDS, Move, PathMoves

TENANT, OTHER = uuid.uuid4(), uuid.uuid4()


def principal(path: str, tenant: uuid.UUID = TENANT) -> Principal:
    return Principal(tenant, "u", uuid.uuid4(), path, frozenset({"rep"}))


def test_a_token_from_before_a_move_reads_the_new_path() -> None:
    moves = PathMoves()
    now = time.time()
    moves.add(TENANT, Move(now, "/t/east/d1/", "/t/west/d1/"))
    issued = int(now) - 60
    assert moves.current(principal("/t/east/d1/"), issued).org_path == "/t/west/d1/"
    assert moves.current(principal("/t/east/d1/s3/"), issued).org_path == "/t/west/d1/s3/"
    # Above, beside, another tenant, or issued a second after the move: unchanged.
    for path in ("/t/east/", "/t/east/d10/", "/t/east/d2/"):
        assert moves.current(principal(path), issued).org_path == path
    assert moves.current(principal("/t/east/d1/", OTHER), issued).org_path == "/t/east/d1/"
    assert moves.current(principal("/t/east/d1/"), int(now) + 1).org_path == "/t/east/d1/"


def test_moves_apply_in_the_order_they_happened() -> None:
    moves = PathMoves()
    now = time.time()
    # Added out of order: the region moved after the dealer had moved into it.
    moves.add(TENANT, Move(now - 10, "/t/west/", "/t/north/west/"))
    moves.add(TENANT, Move(now - 20, "/t/east/d1/", "/t/west/d1/"))
    moves.add(TENANT, Move(now - 20, "/t/east/d1/", "/t/west/d1/"))  # redelivered
    issued = int(now) - 30
    assert moves.current(principal("/t/east/d1/"), issued).org_path == "/t/north/west/d1/"
    # Issued between the two moves: only the second applies.
    assert moves.current(principal("/t/west/d1/"), int(now) - 15).org_path == "/t/north/west/d1/"


def test_moves_older_than_any_token_are_forgotten() -> None:
    moves = PathMoves()
    now = time.time()
    moves.add(TENANT, Move(now - REMEMBER_SECONDS - 60, "/t/east/d1/", "/t/west/d1/"))
    moves.add(TENANT, Move(now, "/t/east/d2/", "/t/west/d2/"))
    assert moves.current(principal("/t/east/d1/"), 0).org_path == "/t/east/d1/"
    assert moves.current(principal("/t/east/d2/"), 0).org_path == "/t/west/d2/"
