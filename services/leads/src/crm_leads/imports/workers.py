"""Preparing an import's slices in worker processes, so parsing and validation (pure Python,
most of an import's CPU) run beside the writes instead of taking turns with them for the GIL.

With ``workers`` processes, each one reads the whole file (parsing alone is cheap) and
prepares every ``workers``-th slice; the writer takes slices back in file order, so "the
first row of a person wins" holds exactly as with one process."""

from __future__ import annotations

import asyncio
import contextlib
import itertools
import multiprocessing
import queue
from dataclasses import dataclass
from multiprocessing.process import BaseProcess
from typing import Any

from crm_leads.imports.columns import parse_header
from crm_leads.imports.prepare import Defaults, Prepared, prepare
from crm_leads.imports.reader import csv_records, file_error, xlsx_records
from crm_leads.scoring.rules import Scorer, parse_rules
from crm_platform.errors import DomainError
from crm_platform.gc_tuning import tune_gc

# Slices a worker may have ready ahead of the writer: enough to never starve it, few enough
# to bound memory (a 20k-row slice is ~10 MB once unpickled).
AHEAD = 2
POLL_SECONDS = 1.0


@dataclass(frozen=True)
class SliceSource:
    path: str
    file_format: str  # "csv" | "xlsx"
    encoding: str
    skip: int  # records already imported (a resumed job)
    slice_rows: int
    defaults: Defaults
    scoring_rules: dict[str, Any]
    group: bool = True  # see crm_leads.imports.prepare.prepare


@dataclass(frozen=True)
class SliceFailed:
    message: str


def _produce(source: SliceSource, worker: int, workers: int, out: Any) -> None:
    """Worker process body: put this worker's slices, then an empty one at the end."""
    tune_gc()
    try:
        with open(source.path, "rb") as file:
            records = (
                csv_records(file, source.encoding)
                if source.file_format == "csv"
                else xlsx_records(file)
            )
            first = next(records, None)
            if first is None:
                raise file_error("the file has no header row")
            header = parse_header(first[1])
            scorer = Scorer(parse_rules(source.scoring_rules))
            for _ in itertools.islice(records, source.skip):
                pass
            for index in itertools.count():
                rows = list(itertools.islice(records, source.slice_rows))
                if index % workers == worker:
                    out.put(prepare(rows, header, source.defaults, scorer, group=source.group))
                if not rows:
                    return
    except DomainError as exc:
        out.put(SliceFailed(exc.message))
    except Exception as exc:  # the writer must hear of anything, or it waits forever
        out.put(SliceFailed(f"import worker failed: {exc!r}"))


class SliceProducer:
    """Starts the workers; ``next`` returns the slices in file order, an empty one (rows 0)
    at the end. Use as a context manager: leaving it stops the workers."""

    def __init__(self, source: SliceSource, workers: int) -> None:
        # spawn, not fork: the service process runs threads (gRPC, the event loop's
        # executors) that a forked child would inherit in an undefined state.
        context = multiprocessing.get_context("spawn")
        self._queues = [context.Queue(maxsize=AHEAD) for _ in range(workers)]
        self._processes: list[BaseProcess] = [
            context.Process(
                target=_produce,
                args=(source, n, workers, q),
                name=f"crm-import-{n}",
                daemon=True,
            )
            for n, q in enumerate(self._queues)
        ]
        self._next = 0

    def __enter__(self) -> SliceProducer:
        for process in self._processes:
            process.start()
        return self

    def __exit__(self, *exc: object) -> None:
        for process in self._processes:
            if process.is_alive():
                process.kill()
        for process in self._processes:
            process.join(timeout=5)
        for q in self._queues:
            q.close()
            q.cancel_join_thread()

    async def next(self) -> Prepared:
        n = self._next % len(self._queues)
        self._next += 1
        item = await asyncio.to_thread(self._get, n)
        if isinstance(item, SliceFailed):
            raise file_error(item.message)
        assert isinstance(item, Prepared)
        return item

    def _get(self, n: int) -> object:
        while True:
            with contextlib.suppress(queue.Empty):
                return self._queues[n].get(timeout=POLL_SECONDS)
            if not self._processes[n].is_alive():
                return SliceFailed(
                    f"import worker {n} exited with code {self._processes[n].exitcode}"
                )
