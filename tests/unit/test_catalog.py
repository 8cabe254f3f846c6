"""The list of services is found without importing them: `complaints run intake` asks it, and importing every app
there gave each service process the others' modules (reporting's numeric stack: some 80 MB resident in each)."""

from __future__ import annotations

import subprocess
import sys


def test_listing_the_services_imports_none_of_them() -> None:
    probe = (
        "import sys\n"
        "from shared.devtools.catalog import available_services\n"
        "print(','.join(available_services()))\n"
        "print(','.join(sorted(m for m in sys.modules if m.endswith('.app') and m.startswith('services.'))))\n"
    )
    out = subprocess.run([sys.executable, "-c", probe], capture_output=True, text=True, check=True, timeout=60)
    listed, imported = out.stdout.splitlines()
    assert listed == "intake,routing,sla,reporting"
    assert imported == ""
