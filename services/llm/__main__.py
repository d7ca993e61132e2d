from services.common.server import serve
from services.llm.config import LLMSettings

if __name__ == "__main__":
    serve("services.llm.app:create_app", LLMSettings())
