from hishamos_kit import migrations
from hishamos_projects.models import Base
from hishamos_projects.settings import ProjectsSettings

settings = ProjectsSettings()
migrations.run(Base.metadata, "alembic_version_projects", settings.migration_database_url, settings.app_role)
