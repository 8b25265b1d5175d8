"""JWT signing keys (kept in the directory's database so every replica signs with the same
key) and token issuance; the public half is served as a JWKS."""

from __future__ import annotations

import json
import time
import uuid
from typing import Any

import jwt
import sqlalchemy as sa
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import rsa
from sqlalchemy.dialects.postgresql import insert
from sqlalchemy.ext.asyncio import AsyncConnection

from crm_directory.models import signing_keys
from crm_platform.auth import Principal


class SigningKeys:
    def __init__(self) -> None:
        self._kid = ""
        self._private: rsa.RSAPrivateKey | None = None
        self._jwks: dict[str, Any] = {"keys": []}

    async def load(self, conn: AsyncConnection) -> None:
        """Load the active key, creating one on first start (race-safe across replicas:
        a fixed advisory lock serialises the create)."""
        await conn.execute(sa.text("SELECT pg_advisory_xact_lock(727001)"))
        rows = (
            await conn.execute(sa.select(signing_keys).order_by(signing_keys.c.create_time))
        ).all()
        if not rows:
            key = rsa.generate_private_key(public_exponent=65537, key_size=2048)
            pem = key.private_bytes(
                serialization.Encoding.PEM,
                serialization.PrivateFormat.PKCS8,
                serialization.NoEncryption(),
            )
            await conn.execute(
                insert(signing_keys)
                .values(kid=uuid.uuid4().hex, private_pem=pem)
                .on_conflict_do_nothing()
            )
            rows = (await conn.execute(sa.select(signing_keys))).all()
        keys = []
        for row in rows:
            private = serialization.load_pem_private_key(row.private_pem, password=None)
            assert isinstance(private, rsa.RSAPrivateKey)
            jwk = json.loads(jwt.algorithms.RSAAlgorithm.to_jwk(private.public_key()))
            keys.append({**jwk, "kid": row.kid, "use": "sig", "alg": "RS256"})
            if row.active:
                self._kid, self._private = row.kid, private
        self._jwks = {"keys": keys}

    @property
    def jwks(self) -> dict[str, Any]:
        return self._jwks

    def issue(self, principal: Principal, *, issuer: str, audience: str, ttl: int) -> str:
        if self._private is None:
            raise RuntimeError("signing keys not loaded")
        now = int(time.time())
        claims = {
            "iss": issuer,
            "aud": audience,
            "sub": principal.subject,
            "iat": now,
            "exp": now + ttl,
            "tid": str(principal.tenant_id),
            "org": str(principal.org_unit_id),
            "org_path": principal.org_path,
            "roles": sorted(principal.roles),
        }
        return jwt.encode(claims, self._private, algorithm="RS256", headers={"kid": self._kid})
