"""Results: the table every scenario prints and the JSON file it leaves in var/bench/."""

from __future__ import annotations

import json
import os
import platform
import subprocess
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

REPO = Path(__file__).resolve().parents[1]


@dataclass(frozen=True)
class Row:
    metric: str
    measured: str
    reference: str = ""  # the limit or target it is read against
    ratio: str = ""


@dataclass
class ScenarioResult:
    name: str
    title: str
    notes: list[str] = field(default_factory=list)  # printed above the table
    rows: list[Row] = field(default_factory=list)
    data: dict[str, Any] = field(default_factory=dict)  # the JSON body
    # Reasons the measurement is not valid (non-2xx answers, failed sanity checks). Targets
    # missed are not problems: they are reported, never asserted.
    problems: list[str] = field(default_factory=list)


def fmt_rate(value: float, unit: str) -> str:
    return f"{value:,.0f} {unit}"


def fmt_ms(value: float) -> str:
    return f"{value:.1f} ms" if value >= 10 else f"{value:.2f} ms"


def fmt_ratio(value: float | None) -> str:
    return "n/a" if value is None else f"{value:.2f}"


def render_table(result: ScenarioResult) -> str:
    header = Row("metric", "measured", "limit / target", "ratio")
    rows = [header, *result.rows]
    widths = [
        max(len(getattr(r, name)) for r in rows)
        for name in ("metric", "measured", "reference", "ratio")
    ]
    rule = "  ".join("-" * w for w in widths)

    def line(r: Row) -> str:
        cells = (
            r.metric.ljust(widths[0]),
            r.measured.rjust(widths[1]),
            r.reference.ljust(widths[2]),
            r.ratio.ljust(widths[3]),
        )
        return "  ".join(cells).rstrip()

    out = [f"== {result.name}: {result.title}"]
    out += [f"   {n}" for n in result.notes]
    out += ["", line(header), rule, *(line(r) for r in result.rows)]
    if result.problems:
        out += ["", "PROBLEMS (the figures above are not valid):"]
        out += [f"  - {p}" for p in result.problems]
    return "\n".join(out)


def _git(*args: str) -> str:
    try:
        return subprocess.run(
            ["git", *args], cwd=REPO, capture_output=True, text=True, timeout=5, check=False
        ).stdout.strip()
    except OSError:
        return ""


def environment() -> dict[str, Any]:
    """What the figures depend on besides the code."""
    load1, load5, _ = os.getloadavg()
    return {
        "python": sys.version.split()[0],
        "platform": platform.platform(),
        "cpus": os.cpu_count(),
        "loadavg_at_start": [round(load1, 2), round(load5, 2)],
        "git_commit": _git("rev-parse", "HEAD"),
        "git_dirty": bool(_git("status", "--porcelain")),
    }


def write_json(result: ScenarioResult, env: dict[str, Any], out_dir: Path) -> Path:
    out_dir.mkdir(parents=True, exist_ok=True)
    stamp = time.strftime("%Y%m%dT%H%M%SZ", time.gmtime())
    path = out_dir / f"{result.name}-{stamp}.json"
    body = {
        "scenario": result.name,
        "title": result.title,
        "timestamp": stamp,
        "environment": env,
        "valid": not result.problems,
        "problems": result.problems,
        **result.data,
    }
    path.write_text(json.dumps(body, indent=2, ensure_ascii=False) + "\n")
    return path


def progress(message: str) -> None:
    """A phase starting (the run is otherwise silent for tens of seconds)."""
    print(f"[{time.strftime('%H:%M:%S')}] {message}", flush=True)
