from hishamos_agents.models import SCHEMA
from hishamos_agents.service import build
from hishamos_agents.settings import AgentsSettings
from hishamos_kit.server import main as serve_main


def main() -> None:
    serve_main("agents", AgentsSettings.for_service("agents"), build, SCHEMA)


if __name__ == "__main__":
    main()
