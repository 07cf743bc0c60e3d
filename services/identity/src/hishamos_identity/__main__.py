from hishamos_identity.models import SCHEMA
from hishamos_identity.recovery import RETENTION as EMAIL_TOKENS
from hishamos_identity.service import Identity
from hishamos_identity.settings import IdentitySettings
from hishamos_identity.standing import Standing
from hishamos_identity.tokens import RETENTION as REFRESH_TOKENS
from hishamos_kit.jobs import RETENTION as FINISHED_JOBS
from hishamos_kit.server import main as serve_main


def main() -> None:
    settings = IdentitySettings.for_service("identity")
    identity = Identity(settings)
    retained = (FINISHED_JOBS, REFRESH_TOKENS, EMAIL_TOKENS)
    serve_main("identity", settings, identity.build, SCHEMA, keys=identity.keys, retained=retained, standing=Standing)


if __name__ == "__main__":
    main()
