"""The suite's services, in start order (the directory first: it serves the JWKS)."""

from __future__ import annotations

import importlib

from crm_platform.runtime import ServiceDefinition

SERVICES = ["directory", "leads", "customers", "sales", "service-desk", "marketing", "analytics"]


def definition(service: str) -> ServiceDefinition:
    module = importlib.import_module(f"crm_{service.replace('-', '_')}.__main__")
    result: ServiceDefinition = module.DEFINITION
    return result
