"""Which services this build carries: the one list the command line and the dev stack both read."""

from __future__ import annotations

import importlib
from typing import Final

SERVICES: Final = ("intake", "routing", "sla", "reporting")


def available_services() -> list[str]:
    """Services whose app module exists in this build."""
    found = []
    for name in SERVICES:
        try:
            importlib.import_module(f"services.{name}.app")
        except ModuleNotFoundError:
            continue
        found.append(name)
    return found
