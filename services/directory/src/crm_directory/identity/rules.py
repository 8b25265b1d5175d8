"""Pure rules for users and API keys."""

from __future__ import annotations

import hashlib
import re
import secrets
from collections.abc import Iterable

from crm_platform.auth import ALL_ROLES, ROLE_INTEGRATION
from crm_platform.errors import invalid

USERNAME_RE = re.compile(r"^[A-Za-z0-9_.@-]{3,64}$")
API_KEY_PREFIX = "crm_"
MAX_EMAIL = 254  # RFC 5321's longest path


def validate_username(username: str) -> str:
    if not USERNAME_RE.fullmatch(username):
        raise invalid("username", "3-64 characters of letters, digits, '_', '.', '@', '-'")
    return username


def validate_password(password: str) -> str:
    if len(password) < 8 or len(password) > 256:
        raise invalid("password", "8 to 256 characters")
    return password


def validate_email(email: str) -> str:
    """Optional; a contact address, never a login, so only a sanity check."""
    if email and ("@" not in email or len(email) > MAX_EMAIL):
        raise invalid("email", f"an email address of at most {MAX_EMAIL} characters")
    return email


def validate_roles(roles: Iterable[str], field_name: str = "roles") -> list[str]:
    result = sorted(set(roles))
    unknown = [r for r in result if r not in ALL_ROLES]
    if unknown:
        raise invalid(field_name, f"unknown roles {unknown}; allowed: {list(ALL_ROLES)}")
    if not result:
        raise invalid(field_name, "at least one role")
    return result


def new_api_key() -> tuple[str, str, bytes]:
    """Returns (secret shown once, display prefix, stored hash)."""
    secret = API_KEY_PREFIX + secrets.token_urlsafe(32)
    return secret, secret[:10], hash_api_key(secret)


def hash_api_key(secret: str) -> bytes:
    return hashlib.sha256(secret.encode()).digest()


def api_key_roles(roles: Iterable[str]) -> list[str]:
    return validate_roles([*roles, ROLE_INTEGRATION])
