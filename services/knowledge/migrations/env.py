from hishamos_kit import migrations
from hishamos_knowledge.models import Base
from hishamos_knowledge.settings import KnowledgeSettings

settings = KnowledgeSettings()
migrations.run(Base.metadata, "alembic_version_knowledge", settings.migration_database_url, settings.app_role)
