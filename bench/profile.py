"""Optional sampling profile of a service process during a load phase, with py-spy.

py-spy is not a project dependency: install it anywhere (``pip install py-spy`` into any
venv or ``pipx install py-spy``) and set ``BENCH_PYSPY`` to its path, or to ``1`` to take it
from PATH. The flame graph (or, with ``BENCH_PYSPY_FORMAT=raw``, collapsed stacks for scripts)
lands next to the JSON results. Needs ptrace rights (root, or ``kernel.yama.ptrace_scope=0``)."""

from __future__ import annotations

import contextlib
import os
import shutil
import subprocess
import time
from collections.abc import Iterator
from pathlib import Path


def pyspy_binary() -> str | None:
    setting = os.environ.get("BENCH_PYSPY", "")
    if not setting or setting == "0":
        return None
    return shutil.which("py-spy") if setting == "1" else setting


@contextlib.contextmanager
def pyspy_record(pid: int, seconds: float, out_dir: Path, label: str) -> Iterator[Path | None]:
    """Record ``pid`` for ``seconds`` while the block runs; yields the SVG path (or None
    when profiling is off)."""
    binary = pyspy_binary()
    if binary is None:
        yield None
        return
    out_dir.mkdir(parents=True, exist_ok=True)
    # BENCH_PYSPY_FORMAT=raw: collapsed stacks (one line per stack and count), for scripts.
    raw = os.environ.get("BENCH_PYSPY_FORMAT", "") == "raw"
    stamp = time.strftime("%Y%m%dT%H%M%SZ", time.gmtime())
    out = out_dir / f"{label}-{stamp}.{'txt' if raw else 'svg'}"
    argv = [binary, "record", "-p", str(pid), "-d", str(max(1, round(seconds)))]
    argv += ["-r", "200", "--nonblocking", "-o", str(out), *(["-f", "raw"] if raw else [])]
    proc = subprocess.Popen(argv, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    try:
        yield out
    finally:
        try:
            _, err = proc.communicate(timeout=seconds + 30)
        except subprocess.TimeoutExpired:
            proc.kill()
            _, err = proc.communicate()
        if proc.returncode != 0:
            print(f"py-spy failed ({proc.returncode}): {err.decode(errors='replace')[-500:]}")
