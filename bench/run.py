"""Benchmark runner (``make bench``): ``python bench/run.py [scenario ...]``.

Each scenario (bench/scenarios/<name>.py) starts its own service processes against the
servers the tests would use, measures the physical limits of its path in the same run,
prints a table and writes var/bench/<scenario>-<timestamp>.json. Exit status: 0 when every
selected scenario produced valid figures (targets missed still exit 0: they are reported,
not asserted), 1 when one crashed or saw errors (non-2xx answers, failed sanity checks), 2 on
bad arguments. See bench/README.md."""

from __future__ import annotations

import argparse
import signal
import sys
import time
import traceback
import warnings
from pathlib import Path
from types import FrameType
from typing import Any, NoReturn

# Run as a file: make the repo root importable for ``bench.*``. Everything heavier is
# imported inside main(), because spawned load-generator processes re-import this module.
REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))


def _exit_on_signal(signum: int, frame: FrameType | None) -> NoReturn:
    # SystemExit unwinds through every ``finally``: service processes get stopped.
    print(f"signal {signum}: stopping every process this run started", flush=True)
    raise SystemExit(128 + signum)


def main(argv: list[str] | None = None) -> int:
    warnings.filterwarnings("ignore", module="platformdirs")  # pgserver import, harmless
    from bench import scenarios

    known = scenarios.available()
    parser = argparse.ArgumentParser(
        prog="bench/run.py",
        description="Run benchmark scenarios; figures are printed next to the physical limits "
        "measured in the same run. Environment: BENCH_SECONDS (10), BENCH_CONNECTIONS (8), "
        "BENCH_WARMUP_SECONDS (2), BENCH_LIMIT_SECONDS (4), BENCH_LOADGEN (auto|wrk|python), "
        "BENCH_WRK_THREADS (1), BENCH_LOAD_PROCS (2), BENCH_KEEP_DB, BENCH_OUT_DIR, "
        "CRM_TEST_PG_URL, CRM_TEST_NATS_URL.",
    )
    parser.add_argument(
        "names", nargs="*", metavar="scenario", help=f"default: all of {', '.join(known)}"
    )
    parser.add_argument("--list", action="store_true", help="list the scenarios and exit")
    args = parser.parse_args(argv)
    if args.list:
        for name in known:
            print(f"{name}: {scenarios.load(name).title}")
        return 0
    unknown = [n for n in args.names if n not in known]
    if unknown:
        parser.error(f"unknown scenario(s) {', '.join(unknown)}; known: {', '.join(known)}")
    selected = args.names or known

    signal.signal(signal.SIGTERM, _exit_on_signal)
    from bench.report import environment, progress

    env = environment()
    progress("choosing PostgreSQL and NATS (like the tests)")
    try:
        return _run_all(selected, env)
    except KeyboardInterrupt:
        print("interrupted: every process this run started has been stopped", flush=True)
        return 130


def _run_all(selected: list[str], env: dict[str, Any]) -> int:
    from bench import scenarios
    from bench.context import BenchContext
    from bench.report import progress, render_table, write_json
    from bench.stack import servers

    status = 0
    with servers() as srv:
        ctx = BenchContext.from_env(srv)
        for name in selected:
            scenario = scenarios.load(name)
            started = time.monotonic()
            progress(f"scenario {name}")
            try:
                result = scenario.run(ctx)
            except Exception:
                traceback.print_exc()
                print(f"scenario {name} FAILED", file=sys.stderr, flush=True)
                status = 1
                continue
            path = write_json(result, env, ctx.out_dir)
            print()
            print(render_table(result))
            shown = path.relative_to(REPO) if path.is_relative_to(REPO) else path
            print(f"\n   {name} took {time.monotonic() - started:.0f} s; JSON: {shown}\n")
            if result.problems:
                status = 1
    return status


if __name__ == "__main__":
    sys.exit(main())
