"""gRPC adapter: parse -> unit of work -> service -> proto."""

from __future__ import annotations

from crm.directory.v1 import directory_pb2, directory_service_pb2_grpc
from crm.directory.v1 import directory_service_pb2 as pb
from crm_directory import flows
from crm_directory.identity import service as identity
from crm_directory.mapping import (
    api_key_to_proto,
    org_unit_to_proto,
    tenant_to_proto,
    user_to_proto,
)
from crm_directory.org import service as org
from crm_directory.settings import Settings
from crm_platform.auth import require_principal
from crm_platform.grpc_server import GrpcBinding, GrpcContext
from crm_platform.ids import parse_id
from crm_platform.pagination import page_of, page_request
from crm_platform.runtime import Runtime


class DirectoryServicer(directory_service_pb2_grpc.DirectoryServiceServicer):
    def __init__(self, rt: Runtime) -> None:
        self.rt = rt
        assert isinstance(rt.settings, Settings)
        self.settings: Settings = rt.settings
        self.keys = rt.extras["signing_keys"]

    async def CreateTenant(
        self, request: pb.CreateTenantRequest, context: GrpcContext
    ) -> pb.CreateTenantResponse:
        md = dict(context.invocation_metadata() or ())
        flows.check_bootstrap(self.settings, md.get("authorization"))
        async with self.rt.db.unit_of_work() as conn:
            tenant, root, admin = await flows.onboard_tenant(
                conn=conn,
                slug=request.slug,
                display_name=request.display_name,
                default_region=request.default_region,
                admin_username=request.admin_username,
                admin_password=request.admin_password,
            )
        return pb.CreateTenantResponse(
            tenant=tenant_to_proto(tenant), root=org_unit_to_proto(root), admin=user_to_proto(admin)
        )

    async def GetTenant(
        self, request: pb.GetTenantRequest, context: GrpcContext
    ) -> directory_pb2.Tenant:
        async with self.rt.db.read() as conn:
            row = await org.get_tenant(
                conn=conn, principal=require_principal(), tenant_id=parse_id(request.id)
            )
        return tenant_to_proto(row)

    async def CreateOrgUnit(
        self, request: pb.CreateOrgUnitRequest, context: GrpcContext
    ) -> directory_pb2.OrgUnit:
        async with self.rt.db.unit_of_work() as conn:
            row = await org.create_org_unit(
                conn=conn,
                principal=require_principal(),
                parent_id=parse_id(request.parent_id, "parent_id"),
                kind=request.kind,
                code=request.code,
                display_name=request.display_name,
            )
        return org_unit_to_proto(row)

    async def GetOrgUnit(
        self, request: pb.GetOrgUnitRequest, context: GrpcContext
    ) -> directory_pb2.OrgUnit:
        async with self.rt.db.read() as conn:
            row = await org.get_org_unit(
                conn=conn, principal=require_principal(), org_unit_id=parse_id(request.id)
            )
        return org_unit_to_proto(row)

    async def ListOrgUnits(
        self, request: pb.ListOrgUnitsRequest, context: GrpcContext
    ) -> pb.ListOrgUnitsResponse:
        page = page_request(request.page_size, request.page_token)
        async with self.rt.db.read() as conn:
            rows = await org.list_org_units(conn=conn, principal=require_principal(), page=page)
        items, token = page_of(rows, page)
        return pb.ListOrgUnitsResponse(
            org_units=[org_unit_to_proto(r) for r in items], next_page_token=token
        )

    async def MoveOrgUnit(
        self, request: pb.MoveOrgUnitRequest, context: GrpcContext
    ) -> directory_pb2.OrgUnit:
        async with self.rt.db.unit_of_work() as conn:
            row = await org.move_org_unit(
                conn=conn,
                principal=require_principal(),
                org_unit_id=parse_id(request.id),
                new_parent_id=parse_id(request.new_parent_id, "new_parent_id"),
            )
        return org_unit_to_proto(row)

    async def CreateUser(
        self, request: pb.CreateUserRequest, context: GrpcContext
    ) -> directory_pb2.User:
        async with self.rt.db.unit_of_work() as conn:
            row = await identity.create_user(
                conn=conn,
                principal=require_principal(),
                org_unit_id=parse_id(request.org_unit_id, "org_unit_id"),
                username=request.username,
                password=request.password,
                display_name=request.display_name,
                email=request.email,
                roles=list(request.roles),
            )
        return user_to_proto(row)

    async def GetUser(self, request: pb.GetUserRequest, context: GrpcContext) -> directory_pb2.User:
        async with self.rt.db.read() as conn:
            row = await identity.get_user(
                conn=conn, principal=require_principal(), user_id=parse_id(request.id)
            )
        return user_to_proto(row)

    async def ListUsers(
        self, request: pb.ListUsersRequest, context: GrpcContext
    ) -> pb.ListUsersResponse:
        page = page_request(request.page_size, request.page_token)
        async with self.rt.db.read() as conn:
            rows = await identity.list_users(conn=conn, principal=require_principal(), page=page)
        items, token = page_of(rows, page)
        return pb.ListUsersResponse(users=[user_to_proto(r) for r in items], next_page_token=token)

    async def CreateApiKey(
        self, request: pb.CreateApiKeyRequest, context: GrpcContext
    ) -> pb.CreateApiKeyResponse:
        async with self.rt.db.unit_of_work() as conn:
            row, secret = await identity.create_api_key(
                conn=conn,
                principal=require_principal(),
                org_unit_id=parse_id(request.org_unit_id, "org_unit_id"),
                display_name=request.display_name,
                roles=list(request.roles),
            )
        return pb.CreateApiKeyResponse(api_key=api_key_to_proto(row), secret=secret)

    async def IssueToken(
        self, request: pb.IssueTokenRequest, context: GrpcContext
    ) -> pb.IssueTokenResponse:
        async with self.rt.db.read() as conn:
            principal = await identity.authenticate_user(
                conn=conn,
                tenant_slug=request.tenant_slug,
                username=request.username,
                password=request.password,
            )
        ttl = self.settings.token_ttl_seconds
        token = self.keys.issue(
            principal, issuer=self.settings.jwt_issuer, audience=self.settings.jwt_audience, ttl=ttl
        )
        return pb.IssueTokenResponse(access_token=token, token_type="Bearer", expires_in=ttl)

    async def VerifyApiKey(
        self, request: pb.VerifyApiKeyRequest, context: GrpcContext
    ) -> pb.VerifyApiKeyResponse:
        async with self.rt.db.read() as conn:
            principal = await identity.resolve_api_key(conn=conn, secret=request.secret)
        return pb.VerifyApiKeyResponse(principal=principal.to_proto())


def bindings(rt: Runtime) -> list[GrpcBinding]:
    return [
        GrpcBinding(
            servicer=DirectoryServicer(rt),
            add=directory_service_pb2_grpc.add_DirectoryServiceServicer_to_server,
            full_name="crm.directory.v1.DirectoryService",
            public_methods=frozenset({"CreateTenant", "IssueToken", "VerifyApiKey"}),
        )
    ]
