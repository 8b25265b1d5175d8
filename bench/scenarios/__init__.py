"""One module per scenario: bench/scenarios/<name>.py defining ``SCENARIO``
(bench.context.Scenario). ``python bench/run.py <name> ...`` selects them; no names runs
all of them in alphabetical order."""

from __future__ import annotations

import importlib
import pkgutil
from pathlib import Path

from bench.context import Scenario


def available() -> list[str]:
    here = str(Path(__file__).parent)
    return sorted(m.name for m in pkgutil.iter_modules([here]) if not m.name.startswith("_"))


def load(name: str) -> Scenario:
    module = importlib.import_module(f"bench.scenarios.{name}")
    scenario = getattr(module, "SCENARIO", None)
    if not isinstance(scenario, Scenario):
        raise TypeError(f"bench/scenarios/{name}.py defines no SCENARIO = Scenario(...)")
    return scenario
