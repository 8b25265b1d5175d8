"""Pure rules of the org tree: codes, paths, and which moves are allowed."""

from __future__ import annotations

import re

from crm.directory.v1 import directory_pb2
from crm_platform.errors import FailedPrecondition, FieldViolation, InvalidArgument, invalid
from crm_platform.protos import enum_by_short_name, parse_enum

CODE_RE = re.compile(r"^[a-z0-9][a-z0-9-]{0,39}$")
REGION_RE = re.compile(r"^[A-Z]{2}$")
# REST names kinds without the enum prefix: HQ, REGION, DEALER, STORE.
KINDS = enum_by_short_name(directory_pb2.OrgUnitKind)


def validate_code(code: str, field_name: str = "code") -> str:
    if not CODE_RE.fullmatch(code):
        raise invalid(
            field_name, "1-40 characters of a-z, 0-9 and '-', starting with a letter or digit"
        )
    return code


MAX_DISPLAY_NAME = 200


def validate_display_name(name: str, *, required: bool = True) -> str:
    """Names are shown, not indexed; the bound keeps gRPC callers (no OpenAPI schema) to
    the limit REST callers get."""
    if required and not name:
        raise invalid("display_name", "required")
    if len(name) > MAX_DISPLAY_NAME:
        raise invalid("display_name", f"at most {MAX_DISPLAY_NAME} characters")
    return name


def validate_region(region: str) -> str:
    if not REGION_RE.fullmatch(region):
        raise invalid("default_region", "an ISO 3166-1 alpha-2 code such as CN")
    return region


def validate_kind(kind: int) -> int:
    violations: list[FieldViolation] = []
    kind = parse_enum(kind, KINDS, "kind", violations)
    if violations:
        raise InvalidArgument.from_violations(violations)
    return kind


def root_path(tenant_slug: str) -> str:
    return f"/{tenant_slug}/"


def child_path(parent_path: str, code: str) -> str:
    return f"{parent_path}{code}/"


def check_move(node_path: str, new_parent_path: str) -> None:
    """A unit cannot move under itself or its own descendants (that would make a cycle),
    and the root stays the root."""
    if node_path.count("/") <= 2:
        raise FailedPrecondition("the root org unit cannot be moved", reason="ROOT_IMMOVABLE")
    if new_parent_path.startswith(node_path):
        raise FailedPrecondition(
            "cannot move an org unit into its own subtree", reason="ORG_UNIT_CYCLE"
        )


def moved_path(path: str, old_prefix: str, new_prefix: str) -> str:
    return new_prefix + path[len(old_prefix) :]
