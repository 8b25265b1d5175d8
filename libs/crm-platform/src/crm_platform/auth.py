"""Authentication (JWT from the directory's JWKS, API keys) and org-subtree visibility.

``visible_to`` is the single place where record visibility is expressed: a principal sees the
records of its tenant whose ``owner_org_path`` starts with its own org path.
"""

from __future__ import annotations

import asyncio
import time
import uuid
from collections.abc import Awaitable, Callable, Sequence
from contextvars import ContextVar
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

import jwt
import sqlalchemy as sa
from jwt import PyJWKClient, PyJWKClientError

from crm.common.v1 import principal_pb2
from crm_platform.errors import PermissionDenied, Unauthenticated

if TYPE_CHECKING:
    from crm_platform.org_moves import PathMoves

ROLE_ADMIN = "tenant_admin"
ROLE_MANAGER = "manager"
ROLE_REP = "rep"
ROLE_VIEWER = "viewer"
ROLE_INTEGRATION = "integration"
ALL_ROLES = (ROLE_ADMIN, ROLE_MANAGER, ROLE_REP, ROLE_VIEWER, ROLE_INTEGRATION)
JWKS_MIN_REFRESH_SECONDS = 5.0
# Verified bearer tokens kept per process, so a client's repeated calls skip the RSA check.
TOKEN_CACHE_MAX = 10_000
WRITE_ROLES = frozenset({ROLE_ADMIN, ROLE_MANAGER, ROLE_REP, ROLE_INTEGRATION})


@dataclass(frozen=True)
class Principal:
    tenant_id: uuid.UUID
    subject: str
    org_unit_id: uuid.UUID
    org_path: str
    roles: frozenset[str] = field(default_factory=frozenset)

    def require_any(self, roles: Sequence[str] | frozenset[str]) -> None:
        if not self.roles.intersection(roles):
            raise PermissionDenied(
                f"one of the roles {sorted(roles)} is required", reason="ROLE_REQUIRED"
            )

    def can_see(self, tenant_id: uuid.UUID, owner_org_path: str) -> bool:
        return tenant_id == self.tenant_id and owner_org_path.startswith(self.org_path)

    def to_proto(self) -> principal_pb2.Principal:
        return principal_pb2.Principal(
            tenant_id=str(self.tenant_id),
            subject=self.subject,
            org_unit_id=str(self.org_unit_id),
            org_path=self.org_path,
            roles=sorted(self.roles),
        )

    @classmethod
    def from_proto(cls, msg: principal_pb2.Principal) -> Principal:
        return cls(
            tenant_id=uuid.UUID(msg.tenant_id),
            subject=msg.subject,
            org_unit_id=uuid.UUID(msg.org_unit_id),
            org_path=msg.org_path,
            roles=frozenset(msg.roles),
        )


current_principal: ContextVar[Principal | None] = ContextVar("crm_principal", default=None)


def visible_to(table: sa.Table | sa.Alias, principal: Principal) -> sa.ColumnElement[bool]:
    """WHERE clause limiting ``table`` (which has owner columns) to the principal's subtree."""
    return sa.and_(
        table.c.tenant_id == principal.tenant_id,
        table.c.owner_org_path.startswith(principal.org_path, autoescape=True),
    )


def principal_from_claims(claims: dict[str, Any]) -> Principal:
    try:
        return Principal(
            tenant_id=uuid.UUID(claims["tid"]),
            subject=str(claims["sub"]),
            org_unit_id=uuid.UUID(claims["org"]),
            org_path=str(claims["org_path"]),
            roles=frozenset(claims.get("roles", [])),
        )
    except (KeyError, ValueError, TypeError) as exc:
        raise Unauthenticated("token lacks CRM claims", reason="TOKEN_CLAIMS_MISSING") from exc


ApiKeyResolver = Callable[[str], Awaitable[Principal]]


class Authenticator:
    """Turns an ``Authorization`` header (``Bearer <jwt>`` or ``ApiKey <secret>``) into a
    Principal. JWT keys come from the directory's JWKS; API keys from a resolver (the
    directory's VerifyApiKey RPC, cached), so no per-request call hits the directory."""

    def __init__(
        self,
        *,
        jwks_url: str,
        issuer: str,
        audience: str,
        api_key_resolver: ApiKeyResolver | None = None,
        api_key_cache_seconds: float = 60.0,
    ) -> None:
        self._jwks_url = jwks_url
        self._jwks_client: PyJWKClient | None = None
        self._keys: dict[str, jwt.PyJWK] = {}
        self._keys_fetched_at = -1e9
        self._issuer = issuer
        self._audience = audience
        self._resolve_api_key = api_key_resolver
        self._api_key_ttl = api_key_cache_seconds
        # secret -> (cache expiry, principal, wall time of the directory's answer)
        self._api_key_cache: dict[str, tuple[float, Principal, float]] = {}
        # Full token string (signature included) -> (exp, iat, principal); insertion ordered.
        self._token_cache: dict[str, tuple[float, float, Principal]] = {}
        # Org units moved since a credential was issued (crm_platform.org_moves): its
        # principal is read with the unit's current path. None: paths as issued.
        self.moves: PathMoves | None = None

    @property
    def jwks_url(self) -> str:
        return self._jwks_url

    @jwks_url.setter
    def jwks_url(self, url: str) -> None:
        self._jwks_url = url
        self._jwks_client = None
        self._token_cache.clear()

    @property
    def _jwks(self) -> PyJWKClient:
        if self._jwks_client is None:
            self._jwks_client = PyJWKClient(
                self._jwks_url, cache_keys=True, lifespan=300, timeout=5
            )
        return self._jwks_client

    async def authenticate(self, authorization: str | None) -> Principal:
        if not authorization:
            raise Unauthenticated("missing Authorization header", reason="CREDENTIALS_MISSING")
        scheme, _, credentials = authorization.partition(" ")
        credentials = credentials.strip()
        if scheme.lower() == "bearer" and credentials:
            return await self._from_jwt(credentials)
        if scheme.lower() == "apikey" and credentials:
            return await self._from_api_key(credentials)
        raise Unauthenticated(
            "Authorization must be 'Bearer <token>' or 'ApiKey <key>'",
            reason="CREDENTIALS_MALFORMED",
        )

    async def _from_jwt(self, token: str) -> Principal:
        """Verified tokens are cached by their full text, signature included (a forged or
        altered token is never a hit), and only until their ``exp``: an expired one is
        verified again and refused as before."""
        hit = self._token_cache.get(token)
        if hit is not None:
            if time.time() < hit[0]:
                return self._current(hit[2], hit[1])
            del self._token_cache[token]
        try:
            header = jwt.get_unverified_header(token)
            key = await self._signing_key(header.get("kid"))
            claims = jwt.decode(
                token,
                key.key,
                algorithms=["RS256"],
                audience=self._audience,
                issuer=self._issuer,
                options={"require": ["exp", "iat", "sub"]},
            )
        except jwt.ExpiredSignatureError as exc:
            raise Unauthenticated("token expired", reason="TOKEN_EXPIRED") from exc
        except (jwt.InvalidTokenError, PyJWKClientError) as exc:
            raise Unauthenticated(f"invalid token: {exc}", reason="TOKEN_INVALID") from exc
        principal = principal_from_claims(claims)
        if len(self._token_cache) >= TOKEN_CACHE_MAX:
            self._token_cache.pop(next(iter(self._token_cache)))  # the oldest entry
        issued_at = float(claims["iat"])
        self._token_cache[token] = (float(claims["exp"]), issued_at, principal)
        return self._current(principal, issued_at)

    def _current(self, principal: Principal, issued_at: float) -> Principal:
        return principal if self.moves is None else self.moves.current(principal, issued_at)

    async def _signing_key(self, kid: object) -> jwt.PyJWK:
        if not isinstance(kid, str):
            raise jwt.InvalidTokenError("token header has no key id")
        key = self._keys.get(kid)
        now = time.monotonic()
        if key is None and now - self._keys_fetched_at > JWKS_MIN_REFRESH_SECONDS:
            # Unknown kid: the directory may have rotated keys. The fetch is blocking I/O, so
            # it runs off the event loop, and at most every few seconds (bad tokens cannot
            # turn into a request flood against the directory).
            jwk_set = await asyncio.to_thread(self._jwks.get_jwk_set, True)
            self._keys = {k.key_id: k for k in jwk_set.keys if k.key_id}
            self._keys_fetched_at = now
            key = self._keys.get(kid)
        if key is None:
            raise jwt.InvalidTokenError(f"unknown signing key {kid!r}")
        return key

    async def _from_api_key(self, secret: str) -> Principal:
        if self._resolve_api_key is None:
            raise Unauthenticated("API keys are not accepted here", reason="API_KEY_UNSUPPORTED")
        now = time.monotonic()
        hit = self._api_key_cache.get(secret)
        if hit and hit[0] > now:
            return self._current(hit[1], hit[2])
        principal = await self._resolve_api_key(secret)
        self._api_key_cache[secret] = (now + self._api_key_ttl, principal, time.time())
        return principal


def require_principal() -> Principal:
    """The caller of the current gRPC request (set by the server interceptor)."""
    principal = current_principal.get()
    if principal is None:
        raise Unauthenticated("no credentials", reason="CREDENTIALS_MISSING")
    return principal
