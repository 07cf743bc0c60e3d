from pydantic_settings import SettingsConfigDict

from hishamos_kit.settings import ServiceSettings


class IdentitySettings(ServiceSettings):
    model_config = SettingsConfigDict(env_prefix="HISHAMOS_IDENTITY_", extra="ignore")
