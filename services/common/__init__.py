"""The small kit every Quarry service shares: settings, logs, errors, health, metrics, HTTP/2."""
