from hishamos_kit.server import main as serve_main
from hishamos_projects.models import SCHEMA
from hishamos_projects.service import build
from hishamos_projects.settings import ProjectsSettings


def main() -> None:
    settings = ProjectsSettings.for_service("projects")
    serve_main("projects", settings, lambda db: build(db, settings), SCHEMA)


if __name__ == "__main__":
    main()
