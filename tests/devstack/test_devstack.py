"""`make up` / `make down` end to end: scripts/devstack.py starts every service as its own
process against real servers, seeds the demo tenant, refuses to start duplicates, and
`down` leaves no process behind.

PostgreSQL is CRM_TEST_PG_URL when set (databases get a unique prefix and are dropped
afterwards), otherwise whatever devstack picks; NATS is a fresh server of this test."""

from __future__ import annotations

import asyncio
import json
import os
import random
import socket
import subprocess
import sys
import uuid
from collections import Counter
from collections.abc import Iterator
from pathlib import Path

import asyncpg
import httpx
import pytest

from crm_platform.testing.servers import NatsServer

pytestmark = [pytest.mark.devstack, pytest.mark.timeout(240)]

REPO = Path(__file__).resolve().parents[2]
SCRIPT = REPO / "scripts" / "devstack.py"
SERVICE_SLOTS = 7  # ports base .. base+6, one per entry of scripts/suite.py SERVICES
DEMO = {"tenant": "demo", "username": "admin", "password": "demo-admin-pw"}
REP = {"tenant": "demo", "username": "east-d01-rep", "password": "demo-pass-123"}


def _bindable(port: int) -> bool:
    with socket.socket() as s:
        try:
            s.bind(("127.0.0.1", port))
        except OSError:
            return False
    return True


def _port_base(low: int, high: int) -> int:
    for _ in range(100):
        base = random.randrange(low, high)
        if all(_bindable(base + i) for i in range(SERVICE_SLOTS)):
            return base
    raise RuntimeError(f"no {SERVICE_SLOTS} free consecutive ports in {low}-{high}")


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    stat = Path(f"/proc/{pid}/stat")
    try:  # a zombie has exited; it only waits for its parent to reap it
        return stat.read_text().rsplit(")", 1)[1].split()[0] != "Z"
    except (OSError, IndexError):
        return True


async def _devstack(env: dict[str, str], command: str) -> subprocess.CompletedProcess[str]:
    return await asyncio.to_thread(
        subprocess.run,
        [sys.executable, str(SCRIPT), command],
        env=env,
        cwd=REPO,
        capture_output=True,
        text=True,
        timeout=150,
    )


def _pids(var_dir: Path) -> dict[str, int]:
    return {p.stem: int(p.read_text()) for p in (var_dir / "pids").glob("*.pid")}


async def _drop_databases(pg_url: str, prefix: str) -> None:
    conn = await asyncpg.connect(pg_url.replace("postgresql+asyncpg://", "postgresql://", 1))
    try:
        rows = await conn.fetch(
            "SELECT datname FROM pg_database WHERE starts_with(datname, $1)", prefix
        )
        for row in rows:
            await conn.execute(f'DROP DATABASE IF EXISTS "{row["datname"]}" WITH (FORCE)')
    finally:
        await conn.close()


@pytest.fixture
def nats(tmp_path: Path) -> Iterator[str]:
    server = NatsServer(store_dir=tmp_path / "nats").start()
    yield server.url
    server.stop()


@pytest.fixture
def stack_env(tmp_path: Path, nats: str) -> dict[str, str]:
    # The developer's own CRM_* settings (a dev PostgreSQL, a service subset) stay out.
    env = {k: v for k, v in os.environ.items() if not k.startswith("CRM_")}
    env.update(
        CRM_VAR_DIR=str(tmp_path / "var"),
        # Below 32768: Linux hands out ephemeral (outgoing) ports above it.
        CRM_HTTP_PORT_BASE=str(_port_base(20000, 26000)),
        CRM_GRPC_PORT_BASE=str(_port_base(26000, 32000)),
        CRM_NATS_URL=nats,
        CRM_DB_PREFIX=f"crm_ds{uuid.uuid4().hex[:8]}_",
    )
    if pg := os.environ.get("CRM_TEST_PG_URL"):
        env["CRM_PG_URL"] = pg
    return env


async def _check_demo(directory: str, leads: str) -> None:
    async with httpx.AsyncClient(timeout=30) as c:
        for base in (directory, leads):
            assert (await c.get(f"{base}/readyz")).status_code == 200
        r = await c.post(f"{directory}/v1/auth/token", json=DEMO)
        assert r.status_code == 200, r.text
        admin = {"Authorization": f"Bearer {r.json()['access_token']}"}
        r = await c.get(f"{directory}/v1/org-units", params={"page_size": 1000}, headers=admin)
        assert r.status_code == 200, r.text
        kinds = Counter(u["kind"] for u in r.json()["org_units"])
        assert kinds == {
            "ORG_UNIT_KIND_HQ": 1,
            "ORG_UNIT_KIND_REGION": 3,
            "ORG_UNIT_KIND_DEALER": 12,
            "ORG_UNIT_KIND_STORE": 24,
        }
        r = await c.post(f"{directory}/v1/auth/token", json=REP)
        assert r.status_code == 200, r.text
        rep = {"Authorization": f"Bearer {r.json()['access_token']}"}
        r = await c.get(f"{leads}/v1/leads", headers=rep)
        assert r.status_code == 200, r.text
        assert [lead["full_name"] for lead in r.json()["leads"]] == ["张伟"]


async def test_up_seeds_the_demo_and_down_stops_everything(stack_env: dict[str, str]) -> None:
    var_dir = Path(stack_env["CRM_VAR_DIR"])
    state_file = var_dir / "state.json"
    try:
        up = await _devstack(stack_env, "up")
        assert up.returncode == 0, up.stdout + up.stderr
        assert "demo-admin-pw" in up.stdout and "/v1/leads" in up.stdout
        state = json.loads(state_file.read_text())
        pids = _pids(var_dir)
        assert {"directory", "leads"} <= pids.keys()
        ports = state["services"]
        assert isinstance(ports, dict)
        await _check_demo(
            f"http://127.0.0.1:{ports['directory'][0]}", f"http://127.0.0.1:{ports['leads'][0]}"
        )

        again = await _devstack(stack_env, "up")
        assert again.returncode == 0, again.stdout + again.stderr
        assert "directory already running" in again.stdout
        assert _pids(var_dir) == pids  # no duplicates, nothing restarted

        status = await _devstack(stack_env, "status")
        assert status.returncode == 0, status.stdout + status.stderr
    finally:
        # Whatever got started (even by a failed `up`) is stopped and cleaned up.
        pids = _pids(var_dir) if (var_dir / "pids").exists() else {}
        state = json.loads(state_file.read_text()) if state_file.exists() else {}
        down = await _devstack(stack_env, "down")
        if state and not state["pg_data_dir"]:  # an external server: drop our databases
            await _drop_databases(state["pg_url"], stack_env["CRM_DB_PREFIX"])
    assert down.returncode == 0, down.stdout + down.stderr
    assert not [name for name, pid in pids.items() if _alive(pid)]
    assert not list((var_dir / "pids").glob("*.pid"))
    after = await _devstack(stack_env, "status")
    assert after.returncode == 1 and "not running" in after.stdout
