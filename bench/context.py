"""What every scenario receives from the runner."""

from __future__ import annotations

import os
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

from bench.load import LoadOptions, options_from_env
from bench.report import REPO, ScenarioResult
from bench.stack import Servers


@dataclass(frozen=True)
class BenchContext:
    servers: Servers
    load: LoadOptions  # the measured load (BENCH_SECONDS, BENCH_CONNECTIONS, BENCH_LOADGEN…)
    limit_seconds: float  # how long each physical limit is measured (BENCH_LIMIT_SECONDS)
    out_dir: Path

    @classmethod
    def from_env(cls, servers: Servers) -> BenchContext:
        return cls(
            servers=servers,
            load=options_from_env(),
            limit_seconds=float(os.environ.get("BENCH_LIMIT_SECONDS", "4")),
            out_dir=Path(os.environ.get("BENCH_OUT_DIR", REPO / "var" / "bench")),
        )


@dataclass(frozen=True)
class Scenario:
    """A module bench/scenarios/<name>.py defines ``SCENARIO = Scenario(...)``."""

    name: str
    title: str
    run: Callable[[BenchContext], ScenarioResult]
