from pydantic_settings import SettingsConfigDict

from hishamos_kit.settings import ServiceSettings


class ProjectsSettings(ServiceSettings):
    model_config = SettingsConfigDict(env_prefix="HISHAMOS_PROJECTS_", extra="ignore")
