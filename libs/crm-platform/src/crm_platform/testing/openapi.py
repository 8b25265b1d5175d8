"""A service's REST surface without its servers: the routers its definition builds, and
the OpenAPI document they make — for contract tests that need no database."""

from __future__ import annotations

import importlib
from typing import Any

from fastapi import APIRouter, FastAPI

from crm_platform.runtime import Runtime

SERVICES = ("directory", "leads", "customers", "sales", "service-desk", "marketing", "analytics")


def service_routers(service: str) -> list[APIRouter]:
    package = "crm_" + service.replace("-", "_")
    definition = importlib.import_module(f"{package}.__main__").DEFINITION
    # Routers only keep references to the runtime; nothing connects while building them.
    settings = definition.settings_cls(db_url="postgresql+asyncpg://u@127.0.0.1:1/x")
    runtime = Runtime(definition, settings)
    runtime.extras["signing_keys"] = None
    return list(definition.http(runtime))


def service_openapi(service: str) -> dict[str, Any]:
    app = FastAPI()
    for router in service_routers(service):
        app.include_router(router)
    return app.openapi()
