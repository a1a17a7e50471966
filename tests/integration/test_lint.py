"""mypy, as configured in pyproject.toml, is clean on the library, the API and the page (ruff runs in the unit
tier: `tests/unit/test_house.py`)."""
from __future__ import annotations

import subprocess
import sys

from tests.helpers import ROOT


def test_mypy():
    r = subprocess.run([sys.executable, "-m", "mypy"], cwd=ROOT, capture_output=True, text=True)
    assert r.returncode == 0, r.stdout + r.stderr
