from hishamos_identity.models import Base
from hishamos_identity.settings import IdentitySettings
from hishamos_kit import migrations

settings = IdentitySettings()
migrations.run(Base.metadata, "alembic_version_identity", settings.migration_database_url, settings.app_role)
