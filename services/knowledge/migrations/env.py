from hishamos_kit import migrations
from hishamos_knowledge.models import SCHEMA, Base
from hishamos_knowledge.settings import KnowledgeSettings

settings = KnowledgeSettings.for_service("knowledge")
migrations.run(Base.metadata, SCHEMA.version_table, settings.migration_database_url, settings.app_role)
