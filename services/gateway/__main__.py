from services.common.server import serve
from services.gateway.config import GatewaySettings

if __name__ == "__main__":
    serve("services.gateway.app:create_app", GatewaySettings())
