"""Which services this build carries: the one list the command line and the dev stack both read."""

from __future__ import annotations

import importlib
from typing import Final

SERVICES: Final = ("intake", "routing", "sla", "reporting")


def available_services() -> list[str]:
    """Services whose app module exists in this build."""
    found = []
    for name in SERVICES:
        module = f"services.{name}.app"
        try:
            importlib.import_module(module)
        except ModuleNotFoundError as exc:
            # Only the service's own absence means "not built"; a missing dependency is an error to show.
            if exc.name not in {module, f"services.{name}"}:
                raise
            continue
        found.append(name)
    return found
