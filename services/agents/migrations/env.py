from hishamos_agents.models import Base
from hishamos_agents.settings import AgentsSettings
from hishamos_kit import migrations

settings = AgentsSettings()
migrations.run(Base.metadata, "alembic_version_agents", settings.migration_database_url, settings.app_role)
