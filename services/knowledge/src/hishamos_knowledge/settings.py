from pydantic_settings import SettingsConfigDict

from hishamos_kit.settings import ServiceSettings


class KnowledgeSettings(ServiceSettings):
    model_config = SettingsConfigDict(env_prefix="HISHAMOS_KNOWLEDGE_", extra="ignore")
