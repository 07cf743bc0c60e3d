from hishamos_kit import migrations
from hishamos_projects.models import SCHEMA, Base
from hishamos_projects.settings import ProjectsSettings

settings = ProjectsSettings.for_service("projects")
migrations.run(Base.metadata, SCHEMA.version_table, settings.migration_database_url, settings.app_role)
