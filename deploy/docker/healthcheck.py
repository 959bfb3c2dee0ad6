"""Container health check: GET the service's ``/healthz`` on loopback.

Exit status 0 when it answers 2xx within the timeout, 1 otherwise (Docker's
HEALTHCHECK contract). The port is the one the image was built for
(``/opt/venv/clarion-service.env``), or ``CLARION_HEALTH_PORT`` when set, so a
deployment that moves the health port moves the check with it. Standard library
only: the slim image has no curl.
"""

from __future__ import annotations

import os
import sys
import urllib.request
from pathlib import Path

SERVICE_ENV = Path("/opt/venv/clarion-service.env")


def health_port(env_file: Path = SERVICE_ENV) -> int:
    """Port of ``/healthz``: ``CLARION_HEALTH_PORT`` if set, else the build-time value."""
    if value := os.environ.get("CLARION_HEALTH_PORT"):
        return int(value)
    for line in env_file.read_text(encoding="utf-8").splitlines():
        key, _, val = line.partition("=")
        if key == "CLARION_HEALTH_PORT":
            return int(val)
    raise SystemExit(f"CLARION_HEALTH_PORT missing from {env_file}")


def main() -> int:
    """Return 0 if ``http://127.0.0.1:<port>/healthz`` answers 2xx within 2 s, else 1."""
    url = f"http://127.0.0.1:{health_port()}/healthz"
    try:
        with urllib.request.urlopen(url, timeout=2) as response:
            return 0 if 200 <= response.status < 300 else 1
    except OSError as exc:
        print(f"unhealthy: {url}: {exc}", file=sys.stderr)
        return 1


if __name__ == "__main__":
    sys.exit(main())
