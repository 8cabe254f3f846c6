"""The reporting service's resident memory (issue #9: each service under 200 MB): what it imports at start.

`scipy.stats` alone is about 90 MB resident; the early-warning rule needs one function of scipy.special, imported
when the first warning is judged. Checked in a fresh interpreter, as `complaints run reporting` starts."""

from __future__ import annotations

import json
import math
import subprocess
import sys

import pytest
from scipy.stats import poisson

from services.reporting.warnings import tail_probability
from tests.support.infra import REPO

HEAVY = ("scipy.stats", "scipy.special", "numpy", "openpyxl")


def test_the_reporting_app_imports_no_heavy_numeric_module() -> None:
    code = (
        "import json, sys\n"
        "import services.reporting.app\n"
        f"print(json.dumps([m for m in {HEAVY!r} if m in sys.modules]))\n"
    )
    out = subprocess.run([sys.executable, "-c", code], cwd=REPO, capture_output=True, text=True, check=True)
    assert json.loads(out.stdout.strip().splitlines()[-1]) == []


@pytest.mark.parametrize("count", [-2, -1, 0, 1, 2, 3, 4, 5, 7, 10, 20, 50, 120, 400])
def test_the_tail_probability_is_poisson_sf_to_the_bit(count: int) -> None:
    for lam in [0.0, 0.5, 0.625, 1.0, 1.125, 2.5, 3.875, 8.0, 19.75, 60.0, 125.5, 399.875, math.inf]:
        expected = float(poisson.sf(count - 1, lam))
        assert tail_probability(count, lam) == expected, (count, lam)
    assert math.isnan(tail_probability(count, -1.0))
    assert math.isnan(tail_probability(count, math.nan))
