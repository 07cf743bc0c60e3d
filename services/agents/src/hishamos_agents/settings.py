from pydantic import Field
from pydantic_settings import SettingsConfigDict

from hishamos_kit.settings import ServiceSettings


class AgentsSettings(ServiceSettings):
    model_config = SettingsConfigDict(env_prefix="HISHAMOS_AGENTS_", extra="ignore")

    credentials_key: str = Field(
        default="", description="Base64 of 32 random bytes that seal platform API keys at rest; `make up` sets it"
    )
