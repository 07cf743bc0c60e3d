from pydantic import Field
from pydantic_settings import SettingsConfigDict

from hishamos_kit.settings import ServiceSettings


class IdentitySettings(ServiceSettings):
    model_config = SettingsConfigDict(env_prefix="HISHAMOS_IDENTITY_", extra="ignore")

    key_encryption_key: str = Field("", description="base64 of 32 bytes; seals signing keys at rest")
    access_token_seconds: int = 900
    refresh_token_days: int = 30
    argon2_time_cost: int = 2
    argon2_memory_kib: int = 19456
    argon2_parallelism: int = 1
