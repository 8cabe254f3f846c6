"""Which services this build carries: the one list the command line and the dev stack both read."""

from __future__ import annotations

import importlib.util
from typing import Final

SERVICES: Final = ("intake", "routing", "sla", "reporting")


def available_services() -> list[str]:
    """Services whose app module exists in this build. Found, not imported: `complaints run intake` asks this list,
    and importing every service's app there cost each process the others' modules (tens of MB resident); a module
    that is present but cannot be imported (a missing dependency) fails where it is run, saying why."""
    return [name for name in SERVICES if importlib.util.find_spec(f"services.{name}.app") is not None]
