#!/usr/bin/env python3
"""Container HEALTHCHECK: exit 0 when QUARRY_HEALTHCHECK_URL answers 2xx.

Python, not curl: the slim images carry no curl, and every image has Python.
"""

import os
import sys
import urllib.request

url = os.environ.get("QUARRY_HEALTHCHECK_URL", "http://127.0.0.1:8000/health/live")
try:
    with urllib.request.urlopen(url, timeout=2) as response:
        sys.exit(0 if 200 <= response.status < 300 else 1)
except Exception as exc:  # any failure is unhealthy; say why in `docker inspect`
    print(f"unhealthy: {url}: {exc}", file=sys.stderr)
    sys.exit(1)
