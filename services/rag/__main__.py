from services.common.server import serve
from services.rag.config import RagSettings

if __name__ == "__main__":
    serve("services.rag.app:create_app", RagSettings())
