"""Rows -> protos (the one representation both transports return)."""

from __future__ import annotations

from typing import Any

from crm.directory.v1 import directory_pb2
from crm_platform.protos import timestamp as _ts


def tenant_to_proto(row: Any) -> directory_pb2.Tenant:
    return directory_pb2.Tenant(
        id=str(row.id),
        slug=row.slug,
        display_name=row.display_name,
        default_region=row.default_region,
        create_time=_ts(row.create_time),
    )


def org_unit_to_proto(row: Any) -> directory_pb2.OrgUnit:
    return directory_pb2.OrgUnit(
        id=str(row.id),
        tenant_id=str(row.tenant_id),
        parent_id=str(row.parent_id) if row.parent_id else "",
        kind=row.kind,
        code=row.code,
        display_name=row.display_name,
        path=row.path,
        create_time=_ts(row.create_time),
    )


def user_to_proto(row: Any) -> directory_pb2.User:
    return directory_pb2.User(
        id=str(row.id),
        tenant_id=str(row.tenant_id),
        org_unit_id=str(row.org_unit_id),
        org_path=row.org_path,
        username=row.username,
        display_name=row.display_name,
        email=row.email,
        roles=list(row.roles),
        create_time=_ts(row.create_time),
        active=row.active,
    )


def api_key_to_proto(row: Any) -> directory_pb2.ApiKey:
    return directory_pb2.ApiKey(
        id=str(row.id),
        tenant_id=str(row.tenant_id),
        org_unit_id=str(row.org_unit_id),
        display_name=row.display_name,
        roles=list(row.roles),
        prefix=row.prefix,
        create_time=_ts(row.create_time),
    )
