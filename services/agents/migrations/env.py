from hishamos_agents.models import SCHEMA, Base
from hishamos_agents.settings import AgentsSettings
from hishamos_kit import migrations

settings = AgentsSettings.for_service("agents")
migrations.run(Base.metadata, SCHEMA.version_table, settings.migration_database_url, settings.app_role)
