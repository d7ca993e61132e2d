"""Gateway: the one public door. API keys, scopes, per-key rate limits, proxying over HTTP/2."""
