"""The house rules a newcomer relies on: small rooms (no module of the library or the API over 400 lines, no function
there or in the page over 60), ruff clean, and the SQL kept in the database package."""
from __future__ import annotations

import ast
import subprocess
import sys

from tests.helpers import ROOT

MAX_MODULE_LINES = 400
MAX_FUNCTION_LINES = 60
ROOMS = ["clip_embedder", "api", "ui"]


def python_files(*roots: str) -> list:
    out = []
    for r in roots:
        p = ROOT / r
        out += [p] if p.is_file() else sorted(p.rglob("*.py"))
    return out


def test_no_module_over_400_lines_and_no_function_over_60():
    too_long = []
    for path in python_files(*ROOMS, "streamlit_app.py"):
        src = path.read_text(encoding="utf-8")
        rel = path.relative_to(ROOT)
        if src.count("\n") > MAX_MODULE_LINES:
            too_long.append(f"{rel}: {src.count(chr(10))} lines")
        for node in ast.walk(ast.parse(src)):
            if isinstance(node, ast.FunctionDef | ast.AsyncFunctionDef):
                n = (node.end_lineno or node.lineno) - node.lineno + 1
                if n > MAX_FUNCTION_LINES:
                    too_long.append(f"{rel}:{node.lineno} {node.name}(): {n} lines")
    assert not too_long, "split these rooms: " + "; ".join(too_long)


def test_sql_lives_in_the_database_package():
    """No SQL statement outside `clip_embedder/db/` (FAISS, the pipeline, routes and the worker go through the
    repositories)."""
    keywords = ("SELECT ", "INSERT INTO", "UPDATE ", "DELETE FROM", "CREATE TABLE")
    found = []
    for path in python_files(*ROOMS):
        rel = path.relative_to(ROOT)
        if rel.parts[:2] == ("clip_embedder", "db"):
            continue
        for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
            if isinstance(node, ast.Constant) and isinstance(node.value, str) \
                    and any(node.value.lstrip().upper().startswith(k) for k in keywords):
                found.append(f"{rel}:{node.lineno}")
    assert not found, found


def test_ruff():
    r = subprocess.run([sys.executable, "-m", "ruff", "check", "."], cwd=ROOT, capture_output=True, text=True)
    assert r.returncode == 0, r.stdout + r.stderr
