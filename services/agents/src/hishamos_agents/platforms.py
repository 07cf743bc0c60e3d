"""Platforms: how a Platform row maps to its message, which values it accepts, and how its API key is sealed."""

from __future__ import annotations

import math
from decimal import Decimal

from hishamos.agents.v1 import platform_pb2 as pb
from hishamos_agents.models import Platform
from hishamos_kit import validate
from hishamos_kit.crypto import Sealer
from hishamos_kit.errors import Violations
from hishamos_kit.listing import Field, ListSpec, parse_bool, parse_int, parse_time
from hishamos_kit.resources import ResourcePath
from hishamos_kit.standard import ResourceType, base_fields

PROVIDERS = validate.EnumCodes(pb.Platform.Provider.items(), "PROVIDER_")

PRICE_STEP = Decimal("0.000001")  # Numeric(12, 6)
MAX_PRICE = Decimal("999999.999999")
MAX_API_KEY = 500


def api_key_hint(key: str) -> str:
    """Enough of a key to recognise it, never enough to use it: `sk-…Q2xz`; a short key shows nothing
    (a few characters of it would be a good part of it)."""
    if len(key) < 16:
        return "…"
    return f"{key[:3]}…{key[-4:]}" if len(key) >= 20 else f"…{key[-4:]}"


def associated_data(row: Platform) -> str:
    """Binds a sealed key to its organization and row: a ciphertext copied elsewhere does not open."""
    return f"{row.organization_id}/{row.id}"


class PlatformType(ResourceType[Platform, pb.Platform]):
    model = Platform
    message = pb.Platform
    field = "platform"
    path = ResourcePath("organizations/{organization}/platforms/{platform}")
    updatable = frozenset(
        {
            "display_name",
            "provider",
            "api_type",
            "base_url",
            "default_model",
            "api_key",
            "enabled",
            "priority",
            "rate_limit_per_minute",
            "token_limit_per_minute",
            "input_price_per_million",
            "output_price_per_million",
        }
    )
    unique = {"uq_platforms_organization_id_display_name": "platform.display_name"}
    list_spec = ListSpec(
        filter_fields={
            "display_name": Field(Platform.display_name, text=True),
            "provider": PROVIDERS.filter_field(Platform.provider),
            "enabled": Field(Platform.enabled, parse_bool),
            "default_model": Field(Platform.default_model),
            "priority": Field(Platform.priority, parse_int),
            "create_time": Field(Platform.created_at, parse_time),
            "update_time": Field(Platform.updated_at, parse_time),
        },
        order_fields={
            "display_name": Field(Platform.display_name),
            "priority": Field(Platform.priority, parse_int),
            "create_time": Field(Platform.created_at, parse_time),
            "update_time": Field(Platform.updated_at, parse_time),
        },
        default_order="create_time desc",
        id_column=Platform.id,
    )

    def __init__(self, sealer: Sealer) -> None:
        self.sealer = sealer

    def to_message(self, row: Platform) -> pb.Platform:
        return pb.Platform(
            name=self.path.format(row.organization_id, row.id),
            display_name=row.display_name,
            provider=PROVIDERS.value(row.provider),
            api_type=row.api_type,
            base_url=row.base_url,
            default_model=row.default_model,
            api_key_hint=row.api_key_hint,
            enabled=row.enabled,
            priority=row.priority,
            rate_limit_per_minute=row.rate_limit_per_minute,
            token_limit_per_minute=row.token_limit_per_minute,
            input_price_per_million=float(row.input_price_per_million),
            output_price_per_million=float(row.output_price_per_million),
            **base_fields(row),
        )

    def apply(self, row: Platform, message: pb.Platform, paths: list[str], violations: Violations) -> None:
        v = violations
        destination = (row.base_url, row.provider)
        for path in paths:
            field = f"platform.{path}"
            if path == "display_name":
                row.display_name = validate.text(v, field, message.display_name, required=True)
            elif path == "provider":
                row.provider = PROVIDERS.check(v, field, message.provider)
            elif path == "api_type":
                row.api_type = validate.text(v, field, message.api_type, max_length=50)
            elif path == "base_url":
                row.base_url = validate.http_url(v, field, message.base_url, bare=True)  # the key: api_key
            elif path == "default_model":
                row.default_model = validate.text(v, field, message.default_model, required=True)
            elif path == "api_key":
                self.api_key(v, field, message.api_key, row)
            elif path == "enabled":  # named but unset: its default (AIP-134)
                row.enabled = message.enabled if message.HasField("enabled") else True
            elif path == "priority":
                validate.number(v, field, message.priority, low=0, high=1000)
                row.priority = message.priority
            elif path in ("rate_limit_per_minute", "token_limit_per_minute"):
                limit: int = getattr(message, path)
                validate.number(v, field, limit, low=0)
                setattr(row, path, limit)
            elif path in ("input_price_per_million", "output_price_per_million"):
                setattr(row, path, self.price(v, field, getattr(message, path)))
        if row.api_key_sealed is not None and "api_key" not in paths and (row.base_url, row.provider) != destination:
            # Whoever may edit a platform must not send its stored key somewhere else unseen.
            v.add("platform.api_key", "is required again when base_url or provider changes: the key goes there")

    @staticmethod
    def price(v: Violations, field: str, value: float) -> Decimal:
        """US dollars with six decimals, as stored; NaN, infinities and values the column cannot hold are refused."""
        if not math.isfinite(value) or not 0 <= value <= float(MAX_PRICE):  # before Decimal, which would overflow
            v.add(field, f"must be a number between 0 and {MAX_PRICE}")
            return Decimal(0)
        return Decimal(repr(value)).quantize(PRICE_STEP) + Decimal(0)  # -0.0 as 0, as stored

    def api_key(self, v: Violations, field: str, value: str, row: Platform) -> None:
        """Seal a new key to this row, or forget the key when it is set to empty."""
        key = value.strip()
        if len(key) > MAX_API_KEY or not all(0x21 <= ord(c) <= 0x7E for c in key):
            # It goes in an HTTP header, which holds visible ASCII: a line break would end the header and start
            # another, and anything past ASCII would fail every call to the provider instead of this one.
            v.add(
                field,
                f"must be the key as the provider gave it: at most {MAX_API_KEY} visible ASCII characters, no spaces",
            )
        elif key:
            row.api_key_sealed = self.sealer.seal(key.encode(), associated_data(row))
            row.api_key_hint = api_key_hint(key)
        else:
            row.api_key_sealed = None
            row.api_key_hint = ""

    def open_api_key(self, row: Platform) -> str:
        """The clear API key, for the adapters that call the provider; empty when none is set."""
        if row.api_key_sealed is None:
            return ""
        return self.sealer.open(row.api_key_sealed, associated_data(row)).decode()
