from pydantic_settings import SettingsConfigDict

from hishamos_kit.settings import ServiceSettings


class AgentsSettings(ServiceSettings):
    model_config = SettingsConfigDict(env_prefix="HISHAMOS_AGENTS_", extra="ignore")
