from ingest.config import IngestSettings
from services.common.server import serve

if __name__ == "__main__":
    serve("ingest.api.app:create_app", IngestSettings())
