"""A DuckDB 1.5 reader in a throwaway venv, as Grafana's DuckDB plugin (which embeds DuckDB 1.5) would be.

The venv is created once per machine under the temporary folder, behind a file
lock so parallel test runs share it; `pip install duckdb==1.5.*` comes from PyPI.
"""

from __future__ import annotations

import fcntl
import json
import subprocess
import sys
import tempfile
from pathlib import Path
from typing import Any

import pytest

VENV = Path(tempfile.gettempdir()) / "provenance-duckdb-1.5"
REQUIREMENT = "duckdb==1.5.*"

# Runs inside the DuckDB 1.5 venv: open the file read-only, run each query, print JSON.
_READER = r"""
import json, sys, duckdb
path, queries = sys.argv[1], json.loads(sys.stdin.read())
con = duckdb.connect(path, read_only=True)
out = {"version": duckdb.__version__, "results": []}
for q in queries:
    # Values come back as text: the venv holds nothing but duckdb (no pytz for TIMESTAMPTZ).
    cur = con.execute("SELECT COLUMNS(*)::VARCHAR FROM (" + q + ")")
    out["results"].append({"columns": [d[0] for d in cur.description], "rows": cur.fetchall()})
print(json.dumps(out, default=str))
"""


def duckdb15_python() -> Path:
    """The python of a venv holding DuckDB 1.5 (created on first use; fails naming pip's error otherwise)."""
    python = VENV / "bin" / "python"
    ready = VENV / ".ready"
    VENV.parent.mkdir(parents=True, exist_ok=True)
    with open(VENV.parent / "provenance-duckdb-1.5.lock", "w") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        if not ready.exists():
            # No pip of its own: the project's pip installs into it (pip --python), which saves ensurepip.
            subprocess.run([sys.executable, "-m", "venv", "--clear", "--without-pip", str(VENV)], check=True)
            done = subprocess.run([sys.executable, "-m", "pip", "--python", str(python), "install", "-q",
                                   "--disable-pip-version-check", REQUIREMENT], capture_output=True, text=True)
            if done.returncode != 0:
                pytest.fail(f"could not install {REQUIREMENT} into {VENV}: {done.stderr[-2000:]}")
            ready.write_text(REQUIREMENT + "\n")
    return python


def read_with_duckdb15(db_file: Path, queries: list[str]) -> dict[str, Any]:
    """Open `db_file` with DuckDB 1.5 and run `queries`; their columns and rows (values as text), and its version."""
    done = subprocess.run([str(duckdb15_python()), "-c", _READER, str(db_file)], input=json.dumps(queries),
                          capture_output=True, text=True, timeout=120)
    if done.returncode != 0:
        raise AssertionError(f"DuckDB 1.5 could not read {db_file}: {done.stderr[-3000:]}")
    result: dict[str, Any] = json.loads(done.stdout)
    return result
