"""The web console: server-rendered pages on the gateway's public API, mounted at /console."""
