"""A tenant's lead settings document and the effective values it gives with the service's
defaults. No I/O."""

from __future__ import annotations

from dataclasses import dataclass

import phonenumbers
from pydantic import ConfigDict, Field, ValidationError, field_validator
from pydantic_core import PydanticCustomError

from crm_platform.errors import FieldViolation, InvalidArgument, loc_to_field
from crm_platform.validation import InputModel

MIN_STALE_DAYS = 1
MAX_STALE_DAYS = 3650
MAX_POOL_CAP = 100_000
MAX_COOLDOWN_HOURS = 8760
DEFAULT_PRIVATE_POOL_CAP = 200
DEFAULT_RECLAIM_COOLDOWN_HOURS = 24


class LeadSettings(InputModel):
    """What a tenant may set; null (or omitted) leaves the service default in force."""

    # Strict: "30" is not a number of days and "cn" is not a region; unknown keys are errors
    # so a misspelt setting is refused rather than silently ignored.
    model_config = ConfigDict(extra="forbid", frozen=True, strict=True)

    stale_lead_days: int | None = Field(
        default=None,
        ge=MIN_STALE_DAYS,
        le=MAX_STALE_DAYS,
        description="An open lead not updated for this many days is closed as stale.",
    )
    phone_region: str | None = Field(
        default=None,
        max_length=2,
        description="ISO 3166 alpha-2 region (e.g. CN, US) for phones without +country.",
    )

    private_pool_cap: int | None = Field(
        default=None,
        ge=1,
        le=MAX_POOL_CAP,
        description="Most open leads one rep may hold (claims and assignments past it fail).",
    )
    reclaim_cooldown_hours: int | None = Field(
        default=None,
        ge=0,
        le=MAX_COOLDOWN_HOURS,
        description="Hours before a rep may claim again a lead they released or lost.",
    )

    @field_validator("phone_region")
    @classmethod
    def _known_region(cls, value: str | None) -> str | None:
        # Only regions phonenumbers has metadata for: any other would reject every
        # national-format phone the tenant captures.
        if value is not None and value not in phonenumbers.SUPPORTED_REGIONS:
            raise PydanticCustomError(
                "phone_region",
                "not an upper-case ISO 3166 alpha-2 region with phone number rules (e.g. CN)",
            )
        return value


NO_SETTINGS = LeadSettings()


@dataclass(frozen=True)
class ServiceDefaults:
    """The service-wide settings (``STALE_LEAD_DAYS``, ``DEFAULT_PHONE_REGION``)."""

    stale_lead_days: int
    phone_region: str
    private_pool_cap: int = DEFAULT_PRIVATE_POOL_CAP
    reclaim_cooldown_hours: int = DEFAULT_RECLAIM_COOLDOWN_HOURS


@dataclass(frozen=True)
class Effective:
    stale_lead_days: int
    phone_region: str
    private_pool_cap: int
    reclaim_cooldown_hours: int
    # Names of the settings that come from the service default (the tenant has none).
    from_default: tuple[str, ...]


SETTING_NAMES = ("stale_lead_days", "phone_region", "private_pool_cap", "reclaim_cooldown_hours")


def effective(settings: LeadSettings, defaults: ServiceDefaults) -> Effective:
    cooldown = settings.reclaim_cooldown_hours
    return Effective(
        stale_lead_days=settings.stale_lead_days or defaults.stale_lead_days,
        phone_region=settings.phone_region or defaults.phone_region,
        private_pool_cap=settings.private_pool_cap or defaults.private_pool_cap,
        # 0 is a valid choice (no cool-down): only None falls back.
        reclaim_cooldown_hours=defaults.reclaim_cooldown_hours if cooldown is None else cooldown,
        from_default=tuple(name for name in SETTING_NAMES if getattr(settings, name) is None),
    )


def parse_settings(document: object) -> LeadSettings:
    """The validated settings, or InvalidArgument naming every bad field."""
    try:
        return LeadSettings.model_validate(document)
    except ValidationError as exc:
        violations = [
            FieldViolation(
                loc_to_field(e["loc"]),
                "unknown field" if e["type"] == "extra_forbidden" else e["msg"],
            )
            for e in exc.errors()
        ]
        raise InvalidArgument.from_violations(violations, reason="LEAD_SETTINGS_INVALID") from None
