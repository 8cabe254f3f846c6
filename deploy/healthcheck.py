"""The image's HEALTHCHECK: GET /healthz of the service this container runs; exit 0 when it answers 200.

The port is HTTP_PORT when set, else the default port of the service named by PID 1's command line
(`complaints run <service>`, shared/settings.py DEFAULT_PORTS). Standard library only: no curl in the image.
"""

from __future__ import annotations

import os
import sys
import urllib.request
from pathlib import Path

DEFAULT_PORTS = {"intake": 8081, "routing": 8082, "sla": 8083, "reporting": 8084}  # == shared.settings.DEFAULT_PORTS


def port_from(cmdline: bytes, env: dict[str, str]) -> int:
    """The port to probe, from a NUL-separated command line and the environment."""
    if env.get("HTTP_PORT"):
        return int(env["HTTP_PORT"])
    args = [a.decode() for a in cmdline.split(b"\0") if a]
    if "run" in args and args.index("run") + 1 < len(args):
        service = args[args.index("run") + 1]
        if service in DEFAULT_PORTS:
            return DEFAULT_PORTS[service]
    raise SystemExit(f"healthcheck: no `complaints run <service>` in {args!r} and no HTTP_PORT")


def main(cmdline_file: str = "/proc/1/cmdline") -> int:
    port = port_from(Path(cmdline_file).read_bytes(), dict(os.environ))
    try:
        with urllib.request.urlopen(f"http://127.0.0.1:{port}/healthz", timeout=4) as answer:
            return 0 if answer.status == 200 else 1
    except OSError as exc:
        print(f"healthcheck: {exc}", file=sys.stderr)  # noqa: T201
        return 1


if __name__ == "__main__":
    sys.exit(main(*sys.argv[1:]))
