"""Domain errors: raised by service code, mapped once to gRPC status and HTTP problems."""

from __future__ import annotations

from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from typing import ClassVar, Self

import grpc


@dataclass(frozen=True)
class FieldViolation:
    field: str
    description: str


def loc_to_field(loc: Sequence[object]) -> str:
    """A pydantic error location as a dotted field path (``leads.0.phone``); a request
    body's own ``body`` prefix is dropped."""
    parts = [str(p) for p in loc]
    if parts and parts[0] in ("body", "query", "path", "header"):
        parts = parts[1:] if parts[0] == "body" else parts
    return ".".join(parts) or "body"


def describe(violations: Iterable[FieldViolation]) -> str:
    """The detail line of a validation error: ``field: description; ...``."""
    return "; ".join(f"{v.field}: {v.description}" for v in violations)


class DomainError(Exception):
    """Base of every error a client may see. ``reason`` is a stable UPPER_SNAKE code."""

    grpc_code: ClassVar[grpc.StatusCode] = grpc.StatusCode.UNKNOWN
    http_status: ClassVar[int] = 500
    title: ClassVar[str] = "Error"
    default_reason: ClassVar[str] = "ERROR"

    def __init__(
        self,
        message: str,
        *,
        reason: str | None = None,
        violations: Iterable[FieldViolation] = (),
        metadata: Mapping[str, str] | None = None,
    ) -> None:
        super().__init__(message)
        self.message = message
        self.reason = reason or self.default_reason
        self.violations = list(violations)
        self.metadata = dict(metadata or {})


class InvalidArgument(DomainError):
    """A request field is missing or malformed; ``violations`` says which and why."""

    grpc_code = grpc.StatusCode.INVALID_ARGUMENT
    http_status = 422
    title = "Invalid argument"
    default_reason = "INVALID_ARGUMENT"

    @classmethod
    def from_violations(
        cls, violations: Sequence[FieldViolation], *, reason: str | None = None
    ) -> Self:
        """One error for every violation found, so a client fixes a form in one round trip."""
        return cls(describe(violations), reason=reason, violations=violations)


class NotFound(DomainError):
    """The resource does not exist or is not visible to the caller (same answer on purpose)."""

    grpc_code = grpc.StatusCode.NOT_FOUND
    http_status = 404
    title = "Not found"
    default_reason = "NOT_FOUND"


class AlreadyExists(DomainError):
    grpc_code = grpc.StatusCode.ALREADY_EXISTS
    http_status = 409
    title = "Already exists"
    default_reason = "ALREADY_EXISTS"


class FailedPrecondition(DomainError):
    grpc_code = grpc.StatusCode.FAILED_PRECONDITION
    http_status = 409
    title = "Failed precondition"
    default_reason = "FAILED_PRECONDITION"


class EtagMismatch(DomainError):
    grpc_code = grpc.StatusCode.ABORTED
    http_status = 409
    title = "Conflict"
    default_reason = "ETAG_MISMATCH"


class Unauthenticated(DomainError):
    """Missing, malformed, expired or wrongly signed credentials."""

    grpc_code = grpc.StatusCode.UNAUTHENTICATED
    http_status = 401
    title = "Unauthenticated"
    default_reason = "UNAUTHENTICATED"


class PermissionDenied(DomainError):
    grpc_code = grpc.StatusCode.PERMISSION_DENIED
    http_status = 403
    title = "Forbidden"
    default_reason = "PERMISSION_DENIED"


class PayloadTooLarge(DomainError):
    grpc_code = grpc.StatusCode.RESOURCE_EXHAUSTED
    http_status = 413
    title = "Payload too large"
    default_reason = "PAYLOAD_TOO_LARGE"


class Unavailable(DomainError):
    """A dependency is down; retryable."""

    grpc_code = grpc.StatusCode.UNAVAILABLE
    http_status = 503
    title = "Unavailable"
    default_reason = "UNAVAILABLE"


def invalid(field_name: str, description: str, reason: str = "INVALID_ARGUMENT") -> InvalidArgument:
    """Shorthand for a single-field validation error."""
    return InvalidArgument.from_violations([FieldViolation(field_name, description)], reason=reason)
