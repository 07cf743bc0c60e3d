from hishamos_kit.server import main as serve_main
from hishamos_projects.service import build
from hishamos_projects.settings import ProjectsSettings


def main() -> None:
    serve_main("projects", ProjectsSettings.for_service("projects"), build)


if __name__ == "__main__":
    main()
