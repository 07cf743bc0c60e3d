"""Typed settings from the environment, one prefix per service (HISHAMOS_<SERVICE>_...)."""

from __future__ import annotations

import re
from typing import Self

from pydantic import Field, ValidationError, field_validator
from pydantic_settings import BaseSettings, SettingsConfigDict, SettingsError

DEFAULT_PORTS = {"identity": 50051, "agents": 50052, "projects": 50053, "knowledge": 50054}
LEVELS = ("DEBUG", "INFO", "WARNING", "ERROR", "CRITICAL")
DEFAULT_METRICS_PORTS = {"identity": 9464, "agents": 9465, "projects": 9466, "knowledge": 9467}


class ServiceSettings(BaseSettings):
    """What every service reads. Subclasses set `model_config` with their own env prefix.

    Defaults fit the local stack (`make up`), which passes the database URLs it provisions.
    """

    model_config = SettingsConfigDict(extra="ignore")

    host: str = "127.0.0.1"
    port: int = 0
    metrics_port: int = Field(0, description="Prometheus /metrics port; -1 disables it")
    database_url: str = Field("", description="SQLAlchemy URL of the service's app role (no BYPASSRLS)")
    migration_database_url: str = Field("", description="URL of the role that owns the schema and migrates")
    app_role: str = Field("", description="Role the service connects as; migrations grant it table access")
    db_pool_size: int = 10
    identity_target: str = Field("127.0.0.1:50051", description="Where identity serves (JWKS, API keys)")
    jwt_issuer: str = "hishamos-identity"
    jwt_audience: str = "hishamos"
    jwks_cache_seconds: float = 60.0  # bounds how long a key retired at once still verifies
    retention_seconds: float = Field(3600.0, gt=0, description="how often expired rows are deleted")
    grace_seconds: float = 10.0
    drain_seconds: float = Field(
        0.0,
        description="after SIGTERM, seconds to go on serving while health checks answer NOT_SERVING, so that "
        "gateways and load balancers stop sending calls first (Envoy's checks need about 10)",
    )
    max_message_bytes: int = 16 * 1024 * 1024
    log_level: str = "INFO"
    service_credential: str = Field("", description="`<service>:<secret>` for AuthService.IssueServiceToken")
    slow_call_ms: float = Field(
        250.0,
        description="access-log successful calls slower than this, at most once a second per method; errors always",
    )
    page_token_key: str = Field(
        "", description="base64 of 32 bytes sealing page tokens; the same in every process of the service"
    )

    @field_validator("log_level")
    @classmethod
    def _known_level(cls, value: str) -> str:
        if value.upper() not in LEVELS:
            raise ValueError(f"must be one of {', '.join(LEVELS)}")
        return value.upper()

    @classmethod
    def for_service(cls, service: str) -> Self:
        """Settings with the service's default ports filled in; a bad value stops the service with a
        line naming its variable, not a traceback."""
        prefix = cls.model_config.get("env_prefix", "")
        try:
            settings = cls()
        except ValidationError as exc:
            problems = "; ".join(
                f"{prefix}{str(e['loc'][0]).upper()}{''.join(f'[{k!r}]' for k in e['loc'][1:])}: {e['msg']}"
                for e in exc.errors()
            )
            raise SystemExit(f"bad setting: {problems}") from None
        except SettingsError as exc:  # a value that is not JSON where JSON is expected
            field = re.search(r'field "(\w+)"', str(exc))
            name = f"{prefix}{field.group(1).upper()}" if field else f"a {prefix}… variable"
            raise SystemExit(f"bad setting: {name} must be JSON") from None
        if settings.port == 0:
            settings.port = DEFAULT_PORTS[service]
        if settings.metrics_port == 0:
            settings.metrics_port = DEFAULT_METRICS_PORTS[service]
        return settings
