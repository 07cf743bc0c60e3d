from hishamos_identity.models import SCHEMA, Base
from hishamos_identity.settings import IdentitySettings
from hishamos_kit import migrations

settings = IdentitySettings.for_service("identity")
migrations.run(Base.metadata, SCHEMA.version_table, settings.migration_database_url, settings.app_role)
