"""Memory and CPU of a server process, read from outside it.

Peak RSS: the kernel's high-water mark (``VmHWM`` in /proc/<pid>/status) is exact and
costs nothing; psutil (when installed) adds a sampled RSS series, which is also the only
source on systems without /proc. psutil is a transitive dependency here, not a declared
one, so it is imported optionally."""

from __future__ import annotations

import contextlib
import importlib
import os
import threading
import time
from pathlib import Path
from types import ModuleType
from typing import Any

MB = 1024 * 1024


def _psutil() -> ModuleType | None:
    try:
        return importlib.import_module("psutil")
    except ImportError:
        return None


def vm_hwm_bytes(pid: int) -> int | None:
    """Peak resident set size of ``pid`` (Linux), or None."""
    with contextlib.suppress(OSError, ValueError):
        for line in Path(f"/proc/{pid}/status").read_text().splitlines():
            if line.startswith("VmHWM:"):
                return int(line.split()[1]) * 1024
    return None


def rss_bytes(pid: int) -> int | None:
    ps = _psutil()
    if ps is not None:
        with contextlib.suppress(Exception):
            return int(ps.Process(pid).memory_info().rss)
    with contextlib.suppress(OSError, ValueError):
        for line in Path(f"/proc/{pid}/status").read_text().splitlines():
            if line.startswith("VmRSS:"):
                return int(line.split()[1]) * 1024
    return None


def cpu_seconds(pid: int) -> float | None:
    """User + system CPU time consumed so far by ``pid``."""
    ps = _psutil()
    if ps is not None:
        with contextlib.suppress(Exception):
            t = ps.Process(pid).cpu_times()
            return float(t.user + t.system)
    fields = _stat_fields(pid)
    if fields is None:
        return None
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")  # utime, stime


class ProcessMonitor:
    """Samples RSS in a background thread; ``window()`` measures CPU use over a phase."""

    def __init__(self, pid: int, interval: float = 0.25) -> None:
        self.pid = pid
        self.interval = interval
        self.max_rss: int = 0
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._sample, name=f"rss-{pid}", daemon=True)

    def __enter__(self) -> ProcessMonitor:
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        self._thread.join(timeout=2)

    def _sample(self) -> None:
        while not self._stop.is_set():
            rss = rss_bytes(self.pid)
            if rss is not None:
                self.max_rss = max(self.max_rss, rss)
            self._stop.wait(self.interval)

    def peak(self) -> dict[str, Any]:
        """Peak RSS in MB and where the figure came from."""
        hwm = vm_hwm_bytes(self.pid)
        if hwm is not None:
            return {"peak_rss_mb": round(hwm / MB, 1), "source": "VmHWM"}
        if self.max_rss:
            return {"peak_rss_mb": round(self.max_rss / MB, 1), "source": "psutil samples"}
        return {"peak_rss_mb": None, "source": "unavailable"}


class CpuWindow:
    """CPU utilisation of a process over a ``with`` block (1.0 = one core busy)."""

    def __init__(self, pid: int) -> None:
        self.pid = pid
        self.utilisation: float | None = None

    def __enter__(self) -> CpuWindow:
        self._cpu0 = cpu_seconds(self.pid)
        self._t0 = time.monotonic()
        return self

    def __exit__(self, *exc: object) -> None:
        cpu1 = cpu_seconds(self.pid)
        wall = time.monotonic() - self._t0
        if self._cpu0 is not None and cpu1 is not None and wall > 0:
            self.utilisation = (cpu1 - self._cpu0) / wall


def _stat_fields(pid: int) -> list[str] | None:
    try:
        return Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    except (OSError, IndexError):
        return None


def _children(pid: int) -> list[int]:
    found: list[int] = []
    with contextlib.suppress(OSError):
        for task in Path(f"/proc/{pid}/task").iterdir():
            with contextlib.suppress(OSError, ValueError):
                found += [int(c) for c in (task / "children").read_text().split()]
    return found


def split_cpu_seconds(pid: int) -> tuple[float, float] | None:
    """(the process's own CPU, its descendants' CPU: reaped ones as the kernel added them to
    ``cutime``/``cstime``, live ones read directly). Linux only; None elsewhere."""
    fields = _stat_fields(pid)
    if fields is None:
        return None
    tick = os.sysconf("SC_CLK_TCK")
    own = (int(fields[11]) + int(fields[12])) / tick
    descendants = (int(fields[13]) + int(fields[14])) / tick
    stack = _children(pid)
    while stack:
        child = stack.pop()
        child_fields = _stat_fields(child)
        if child_fields is not None:
            descendants += (int(child_fields[11]) + int(child_fields[12])) / tick
            stack += _children(child)
    return own, descendants


class BackendCpu:
    """CPU the PostgreSQL backends serving one database use over a ``with`` block, sampled
    from /proc by backend pid (the server must run on this machine). A backend that exits
    between samples loses at most one sampling interval of its time."""

    def __init__(self, pids: Any, interval: float = 0.25) -> None:
        self._pids = pids  # () -> the database's current backend pids
        self.interval = interval
        self._first: dict[int, float] = {}
        self._last: dict[int, float] = {}
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._sample, name="pg-cpu", daemon=True)
        self.seconds: float | None = None

    def __enter__(self) -> BackendCpu:
        self._read(initial=True)
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        self._thread.join(timeout=5)
        self._read(initial=False)
        self.seconds = sum(self._last[p] - self._first.get(p, 0.0) for p in self._last)

    def _read(self, *, initial: bool) -> None:
        tick = os.sysconf("SC_CLK_TCK")
        for pid in self._pids():
            fields = _stat_fields(pid)
            if fields is None:
                continue
            cpu = (int(fields[11]) + int(fields[12])) / tick
            if initial:
                self._first[pid] = cpu
            self._last[pid] = cpu

    def _sample(self) -> None:
        while not self._stop.wait(self.interval):
            self._read(initial=False)


def backends_of(database: str) -> list[int]:
    """Pids of the local PostgreSQL backends connected to ``database``, found by the process
    title PostgreSQL gives them ("postgres: <user> <database> <client> <state>")."""
    found: list[int] = []
    marker = f" {database} ".encode()
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        with contextlib.suppress(OSError):
            title = (entry / "cmdline").read_bytes()
            if title.startswith(b"postgres: ") and marker in title:
                found.append(int(entry.name))
    return found
