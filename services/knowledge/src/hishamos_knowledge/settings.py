from pydantic import Field
from pydantic_settings import SettingsConfigDict

from hishamos_kit.settings import ServiceSettings


class KnowledgeSettings(ServiceSettings):
    model_config = SettingsConfigDict(env_prefix="HISHAMOS_KNOWLEDGE_", extra="ignore")
    projects_target: str = Field("127.0.0.1:50053", description="Where projects serves (the projects documents name)")
