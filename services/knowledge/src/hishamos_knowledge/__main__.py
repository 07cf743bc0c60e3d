from hishamos_kit.server import main as serve_main
from hishamos_knowledge.models import SCHEMA
from hishamos_knowledge.service import build
from hishamos_knowledge.settings import KnowledgeSettings


def main() -> None:
    settings = KnowledgeSettings.for_service("knowledge")
    serve_main("knowledge", settings, lambda db: build(db, settings), SCHEMA)


if __name__ == "__main__":
    main()
