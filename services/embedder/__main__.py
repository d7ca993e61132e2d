from services.common.server import serve
from services.embedder.config import EmbedderSettings

if __name__ == "__main__":
    serve("services.embedder.app:create_app", EmbedderSettings())
