"""The core stays pure: no broker, no database, no network, no processes, no environment, no clock.

Modelled on Tessera's TestForbiddenFunction: parse every source file of
`pipeline/core` and refuse forbidden imports and calls by name, so a violation
is caught where it is written, not when some code path happens to run.
"""

from __future__ import annotations

import ast
import subprocess
import sys
from pathlib import Path

import pytest

CORE = Path(__file__).resolve().parents[2] / "pipeline" / "core"
CORE_FILES = sorted(CORE.rglob("*.py"))

FORBIDDEN_MODULES = {"faust", "aiokafka", "kafka", "duckdb", "aiohttp", "pyarrow", "socket", "subprocess"}
# Of the project itself, the core may use only itself, the error tree and the event schema.
ALLOWED_PROJECT_MODULES = ("pipeline.core", "pipeline.errors", "pipeline.schema")
ENVIRONMENT = {("os", "environ"), ("os", "getenv"), ("os", "putenv"), ("os", "unsetenv")}
CLOCK_CALLS = {("time", "time"), ("time", "time_ns"), ("time", "monotonic"), ("time", "perf_counter"),
               ("datetime", "now"), ("datetime", "utcnow"), ("datetime", "today"), ("date", "today")}


def imported_modules(tree: ast.AST) -> list[tuple[int, str]]:
    """Every module a file imports, with its line; relative imports resolved against pipeline.core."""
    out = []
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            out.extend((node.lineno, alias.name) for alias in node.names)
        elif isinstance(node, ast.ImportFrom):
            module = node.module or ""
            if node.level:
                module = ".".join(["pipeline", "core"][: 3 - node.level] + ([module] if module else []))
            out.append((node.lineno, module))
            out.extend((node.lineno, f"{module}.{alias.name}") for alias in node.names)
    return out


def dotted(node: ast.AST) -> tuple[str, str] | None:
    """`a.b` as ("a", "b") for an attribute on a plain name."""
    if isinstance(node, ast.Attribute) and isinstance(node.value, ast.Name):
        return node.value.id, node.attr
    return None


def violations(path: Path) -> list[str]:
    tree = ast.parse(path.read_text(encoding="utf-8"), filename=str(path))
    found = []
    for line, module in imported_modules(tree):
        top = module.split(".")[0]
        if top in FORBIDDEN_MODULES:
            found.append(f"{path.name}:{line} imports {module}")
        if top == "pipeline" and not module.startswith(ALLOWED_PROJECT_MODULES):
            found.append(f"{path.name}:{line} imports {module} (core depends on nothing above it)")
        if module in {"os.environ", "os.getenv"}:
            found.append(f"{path.name}:{line} imports {module}")
    for node in ast.walk(tree):
        name = dotted(node)
        if name in ENVIRONMENT:
            found.append(f"{path.name}:{node.lineno} reads {'.'.join(name)}")
        if isinstance(node, ast.Call) and dotted(node.func) in CLOCK_CALLS:
            found.append(f"{path.name}:{node.lineno} reads the clock with {'.'.join(dotted(node.func) or ())}()")
    return found


def test_core_has_modules() -> None:
    names = {p.name for p in CORE_FILES}
    assert {"canonical.py", "blocks.py", "ledger.py", "merkle.py", "wire.py"} <= names


@pytest.mark.parametrize("path", CORE_FILES, ids=lambda p: str(p.relative_to(CORE)))
def test_core_module_uses_nothing_forbidden(path: Path) -> None:
    assert violations(path) == []


@pytest.mark.parametrize("source", [
    "import duckdb",
    "import kafka.consumer",
    "from aiokafka import AIOKafkaConsumer",
    "import pyarrow as pa",
    "from socket import create_connection",
    "def f():\n    import subprocess\n    return subprocess",
    "import os\nX = os.environ['PROVENANCE_KAFKA']",
    "import os\nX = os.environ.get('A')",
    "import os\nX = os.getenv('A')",
    "from os import environ",
    "from pipeline.store import db",
    "from ..store.db import Database",
    "from datetime import datetime\nX = datetime.now()",
    "import time\nX = time.monotonic()",
])
def test_the_checker_catches(source: str, tmp_path: Path) -> None:
    path = tmp_path / "sample.py"
    path.write_text(source)
    assert violations(path), source


@pytest.mark.parametrize("source", [
    "import hashlib\nfrom dataclasses import dataclass",
    "from pipeline.core.merkle import leaf_hash\nfrom pipeline.errors import LedgerError",
    "from .merkle import leaf_hash",
    "from datetime import datetime, timezone\nX = datetime(2026, 1, 1, tzinfo=timezone.utc)",
    "import os.path\nX = os.path.join('a', 'b')",
])
def test_the_checker_allows(source: str, tmp_path: Path) -> None:
    path = tmp_path / "sample.py"
    path.write_text(source)
    assert violations(path) == []


def test_importing_the_core_loads_no_io_library() -> None:
    """Transitive imports too: a fresh interpreter imports every core module and lists what came with it."""
    program = (
        "import importlib, pkgutil, sys, pipeline.core as core\n"
        "for m in pkgutil.walk_packages(core.__path__, 'pipeline.core.'):\n"
        "    importlib.import_module(m.name)\n"
        "print(' '.join(sorted({n.split('.')[0] for n in sys.modules})))\n"
    )
    loaded = set(subprocess.run([sys.executable, "-c", program], check=True, capture_output=True,
                                text=True).stdout.split())
    assert "pipeline" in loaded
    assert loaded & {"faust", "aiokafka", "kafka", "duckdb", "aiohttp", "pyarrow"} == set()
