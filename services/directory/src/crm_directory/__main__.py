"""crm-directory: tenants, org tree, users, roles, API keys; issues JWTs and serves JWKS."""

from __future__ import annotations

from pathlib import Path

from crm_directory.api import grpc as grpc_api
from crm_directory.api import http as http_api
from crm_directory.identity import service as identity
from crm_directory.identity.tokens import SigningKeys
from crm_directory.models import metadata
from crm_directory.settings import Settings
from crm_platform.auth import ApiKeyResolver, Principal
from crm_platform.db import platform_metadata
from crm_platform.runtime import Runtime, ServiceDefinition
from crm_platform.runtime import main as run_main


async def _load_keys(rt: Runtime) -> None:
    keys = SigningKeys()
    async with rt.db.unit_of_work() as conn:
        await keys.load(conn)
    rt.extras["signing_keys"] = keys


def _local_api_keys(rt: Runtime) -> ApiKeyResolver:
    async def resolve(secret: str) -> Principal:
        async with rt.db.read() as conn:
            return await identity.resolve_api_key(conn=conn, secret=secret)

    return resolve


DEFINITION = ServiceDefinition(
    name="directory",
    title="CRM Directory",
    settings_cls=Settings,
    migrations=Path(__file__).parent / "migrations",
    metadata=(metadata, platform_metadata),
    grpc=grpc_api.bindings,
    http=lambda rt: [http_api.router(rt)],
    on_start=_load_keys,
    api_key_resolver=_local_api_keys,
    serves_jwks=True,
)


def main() -> None:
    run_main(DEFINITION)


if __name__ == "__main__":
    main()
