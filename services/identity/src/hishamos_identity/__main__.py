from hishamos_identity.service import Identity
from hishamos_identity.settings import IdentitySettings
from hishamos_kit.server import main as serve_main


def main() -> None:
    settings = IdentitySettings.for_service("identity")
    identity = Identity(settings)
    serve_main("identity", settings, identity.build, keys=identity.keys)


if __name__ == "__main__":
    main()
