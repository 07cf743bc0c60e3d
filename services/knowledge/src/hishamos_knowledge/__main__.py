from hishamos_kit.server import main as serve_main
from hishamos_knowledge.service import build
from hishamos_knowledge.settings import KnowledgeSettings


def main() -> None:
    serve_main("knowledge", KnowledgeSettings.for_service("knowledge"), build)


if __name__ == "__main__":
    main()
