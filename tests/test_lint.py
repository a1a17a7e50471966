"""ruff and mypy, as configured in pyproject.toml, are clean on the library and the API."""
from __future__ import annotations

import subprocess
import sys

from conftest import ROOT

LINTED = ["clip_embedder", "api", "streamlit_app.py", "benchmarks/bench_ingest.py", "tests/test_ingest.py",
          "tests/test_originals.py", "tests/test_lifecycle.py", "tests/test_api.py", "tests/test_streamlit.py",
          "tests/test_lint.py", "tests/test_words.py", "benchmarks/quality_words.py",
          "tests/test_ray_runner.py", "benchmarks/bench_http_scale.py",
          "benchmarks/bench_clip.py", "tests/test_embedders.py", "benchmarks/bench_clip_retrieval.py",
          "benchmarks/common.py", "benchmarks/bench_load.py", "benchmarks/bench_forward.py",
          "benchmarks/bench_index_search.py"]


def test_ruff():
    r = subprocess.run([sys.executable, "-m", "ruff", "check", *LINTED], cwd=ROOT, capture_output=True, text=True)
    assert r.returncode == 0, r.stdout + r.stderr


def test_mypy():
    r = subprocess.run([sys.executable, "-m", "mypy"], cwd=ROOT, capture_output=True, text=True)
    assert r.returncode == 0, r.stdout + r.stderr
