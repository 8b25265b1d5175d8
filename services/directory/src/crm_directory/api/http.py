"""Public REST adapter of the directory."""

from __future__ import annotations

from typing import Annotated, Any

from fastapi import APIRouter, Header
from pydantic import Field

from crm.directory.v1 import directory_pb2
from crm_directory import flows
from crm_directory.identity import service as identity
from crm_directory.mapping import (
    api_key_to_proto,
    org_unit_to_proto,
    tenant_to_proto,
    user_to_proto,
)
from crm_directory.org import rules as org_rules
from crm_directory.org import service as org
from crm_directory.settings import Settings
from crm_platform.http import (
    ApiModel,
    CodeText,
    CurrentPage,
    CurrentPrincipal,
    IdText,
    SecretText,
    Text,
    paged,
    proto_json,
)
from crm_platform.ids import parse_id
from crm_platform.runtime import Runtime

Json = dict[str, Any]


class TenantIn(ApiModel):
    slug: str = Field(min_length=1, max_length=40)
    display_name: str = Field(min_length=1, max_length=200)
    default_region: str = Field(default="CN", min_length=2, max_length=2)
    admin_username: CodeText
    admin_password: SecretText


class TokenIn(ApiModel):
    tenant: CodeText
    username: CodeText
    password: SecretText


class OrgUnitIn(ApiModel):
    parent_id: IdText
    kind: str = Field(max_length=16, pattern=f"^({'|'.join(org_rules.KINDS)})$")
    code: CodeText
    display_name: str = Field(min_length=1, max_length=200)


class MoveIn(ApiModel):
    new_parent_id: IdText


class UserIn(ApiModel):
    org_unit_id: IdText
    username: CodeText
    password: SecretText
    display_name: Text = ""
    email: str = Field(default="", max_length=254)
    roles: list[CodeText] = Field(max_length=16)


class ApiKeyIn(ApiModel):
    org_unit_id: IdText
    display_name: str = Field(min_length=1, max_length=200)
    roles: list[CodeText] = Field(default=[], max_length=16)


def router(rt: Runtime) -> APIRouter:  # noqa: C901 - one closure per route
    assert isinstance(rt.settings, Settings)
    settings: Settings = rt.settings
    keys = rt.extras["signing_keys"]
    r = APIRouter(tags=["directory"])

    @r.get("/.well-known/jwks.json", tags=["auth"])
    async def jwks() -> Json:
        return dict(keys.jwks)

    @r.post("/v1/tenants", status_code=201, tags=["tenants"])
    async def create_tenant(
        body: TenantIn, authorization: Annotated[str | None, Header()] = None
    ) -> Json:
        flows.check_bootstrap(settings, authorization)
        async with rt.db.unit_of_work() as conn:
            tenant, root, admin = await flows.onboard_tenant(
                conn=conn,
                slug=body.slug,
                display_name=body.display_name,
                default_region=body.default_region,
                admin_username=body.admin_username,
                admin_password=body.admin_password,
            )
        return {
            "tenant": proto_json(tenant_to_proto(tenant)),
            "root": proto_json(org_unit_to_proto(root)),
            "admin": proto_json(user_to_proto(admin)),
        }

    @r.get("/v1/tenants/{tenant_id}", tags=["tenants"])
    async def get_tenant(tenant_id: str, principal: CurrentPrincipal) -> Json:
        async with rt.db.read() as conn:
            row = await org.get_tenant(
                conn=conn, principal=principal, tenant_id=parse_id(tenant_id)
            )
        return proto_json(tenant_to_proto(row))

    @r.post("/v1/auth/token", tags=["auth"])
    async def issue_token(body: TokenIn) -> Json:
        async with rt.db.read() as conn:
            principal = await identity.authenticate_user(
                conn=conn, tenant_slug=body.tenant, username=body.username, password=body.password
            )
        ttl = settings.token_ttl_seconds
        token = keys.issue(
            principal, issuer=settings.jwt_issuer, audience=settings.jwt_audience, ttl=ttl
        )
        return {"access_token": token, "token_type": "Bearer", "expires_in": ttl}

    @r.post("/v1/org-units", status_code=201, tags=["org-units"])
    async def create_org_unit(body: OrgUnitIn, principal: CurrentPrincipal) -> Json:
        async with rt.db.unit_of_work() as conn:
            row = await org.create_org_unit(
                conn=conn,
                principal=principal,
                parent_id=parse_id(body.parent_id, "parent_id"),
                kind=org_rules.KINDS[body.kind],
                code=body.code,
                display_name=body.display_name,
            )
        return proto_json(org_unit_to_proto(row))

    @r.get("/v1/org-units", tags=["org-units"])
    async def list_org_units(principal: CurrentPrincipal, page: CurrentPage) -> Json:
        async with rt.db.read() as conn:
            rows = await org.list_org_units(conn=conn, principal=principal, page=page)
        return paged("org_units", rows, page, lambda x: proto_json(org_unit_to_proto(x)))

    @r.get("/v1/org-units/{org_unit_id}", tags=["org-units"])
    async def get_org_unit(org_unit_id: str, principal: CurrentPrincipal) -> Json:
        async with rt.db.read() as conn:
            row = await org.get_org_unit(
                conn=conn, principal=principal, org_unit_id=parse_id(org_unit_id)
            )
        return proto_json(org_unit_to_proto(row))

    @r.post("/v1/org-units/{org_unit_id}:move", tags=["org-units"])
    async def move_org_unit(org_unit_id: str, body: MoveIn, principal: CurrentPrincipal) -> Json:
        async with rt.db.unit_of_work() as conn:
            row = await org.move_org_unit(
                conn=conn,
                principal=principal,
                org_unit_id=parse_id(org_unit_id),
                new_parent_id=parse_id(body.new_parent_id, "new_parent_id"),
            )
        return proto_json(org_unit_to_proto(row))

    @r.post("/v1/users", status_code=201, tags=["users"])
    async def create_user(body: UserIn, principal: CurrentPrincipal) -> Json:
        async with rt.db.unit_of_work() as conn:
            row = await identity.create_user(
                conn=conn,
                principal=principal,
                org_unit_id=parse_id(body.org_unit_id, "org_unit_id"),
                username=body.username,
                password=body.password,
                display_name=body.display_name,
                email=body.email,
                roles=body.roles,
            )
        return proto_json(user_to_proto(row))

    @r.get("/v1/users", tags=["users"])
    async def list_users(principal: CurrentPrincipal, page: CurrentPage) -> Json:
        async with rt.db.read() as conn:
            rows = await identity.list_users(conn=conn, principal=principal, page=page)
        return paged("users", rows, page, lambda x: proto_json(user_to_proto(x)))

    @r.get("/v1/users/{user_id}", tags=["users"])
    async def get_user(user_id: str, principal: CurrentPrincipal) -> Json:
        async with rt.db.read() as conn:
            row = await identity.get_user(conn=conn, principal=principal, user_id=parse_id(user_id))
        return proto_json(user_to_proto(row))

    @r.post("/v1/users/{user_id}:deactivate", tags=["users"])
    async def deactivate_user(user_id: str, principal: CurrentPrincipal) -> Json:
        """Deactivate a user who left (tenant administrators): logins are refused from now
        on; publishes `crm.directory.user.deactivated.v1`. Already deactivated: 409
        `USER_ALREADY_DEACTIVATED`."""
        async with rt.db.unit_of_work() as conn:
            row = await identity.deactivate_user(
                conn=conn, principal=principal, user_id=parse_id(user_id)
            )
        return proto_json(user_to_proto(row))

    @r.get("/v1/me", tags=["auth"])
    async def me(principal: CurrentPrincipal) -> Json:
        return proto_json(principal.to_proto())

    @r.post("/v1/api-keys", status_code=201, tags=["api-keys"])
    async def create_api_key(body: ApiKeyIn, principal: CurrentPrincipal) -> Json:
        async with rt.db.unit_of_work() as conn:
            row, secret = await identity.create_api_key(
                conn=conn,
                principal=principal,
                org_unit_id=parse_id(body.org_unit_id, "org_unit_id"),
                display_name=body.display_name,
                roles=body.roles,
            )
        return {"api_key": proto_json(api_key_to_proto(row)), "secret": secret}

    return r


__all__ = ["directory_pb2", "router"]
