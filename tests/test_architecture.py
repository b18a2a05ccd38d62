"""The import rules of docs/architecture.md, checked on the source.

Every ``import`` of every module counts, also those inside functions and
under ``TYPE_CHECKING``: a type-only import still ties one layer to another.
"""

from __future__ import annotations

import ast
import subprocess
import sys
from pathlib import Path

import pytest

from artifactstore.client.remote import RemoteStore
from artifactstore.model.api import StoreAPI
from artifactstore.store import Store

PACKAGE = Path(__file__).resolve().parents[1] / "src" / "artifactstore"

#: What the services may import of ours; the store facade may import the services too.
_SERVICE_LAYER = {
    "errors",
    "model",
    "provenance",
    "config",
    "dataplane",
    "controlplane",
    "client.files",
}
#: A module's group: its first package under artifactstore, or the root module's name.
#: Each group may import these groups of ours (its own always).
ALLOWED: dict[str, set[str]] = {
    "errors": set(),
    "model": {"errors"},
    "config": {"errors", "model"},
    "provenance": {"errors", "model"},
    "dataplane": {"errors", "model", "config"},
    "controlplane": {"errors", "model", "provenance", "config", "dataplane"},
    "client": {"errors", "model", "provenance", "config", "dataplane.digests"},
    "services": _SERVICE_LAYER,
    # The Store's verbs by service: they name the services for typing only (the test
    # below that loads the facade without SQLAlchemy holds them to it).
    "facade": {"errors", "model", "services"},
    "store": _SERVICE_LAYER | {"services", "facade"},
    "testing": {"errors", "model", "dataplane"},
    "server": {"errors", "model", "provenance", "config", "store"},
    "cli": {"errors", "model", "provenance", "config", "store", "client", "server"},
    "__init__": {"store"},
}
#: Within a group that may import another, modules it still may not.
FORBIDDEN: dict[str, set[str]] = {
    # The control plane and the services use the data plane's protocol, never a backend.
    "controlplane": {"dataplane.backends"},
    "services": {"dataplane.backends"},
}
#: Third-party packages a group may not import.
FORBIDDEN_THIRD_PARTY: dict[str, set[str]] = {
    group: {"sqlalchemy", "alembic"}
    for group in (
        "model",
        "facade",
        "provenance",
        "dataplane",
        "client",
        "server",
        "cli",
        "testing",
        "__init__",
    )
}
FORBIDDEN_THIRD_PARTY["model"] |= {"httpx", "fastapi", "starlette"}
FORBIDDEN_THIRD_PARTY["dataplane"] |= {"httpx", "fastapi", "starlette"}
FORBIDDEN_THIRD_PARTY["provenance"] |= {"httpx", "fastapi", "starlette"}
FORBIDDEN_THIRD_PARTY["controlplane"] = {"httpx", "fastapi", "starlette"}


def group_of(path: Path) -> str:
    rel = path.relative_to(PACKAGE)
    return rel.parts[0] if len(rel.parts) > 1 else rel.stem


def imports_of(path: Path) -> list[str]:
    """Every module ``path`` imports, absolute (``artifactstore.x.y`` or third party)."""
    out: list[str] = []
    for node in ast.walk(ast.parse(path.read_text(), str(path))):
        if isinstance(node, ast.Import):
            out += [alias.name for alias in node.names]
        elif isinstance(node, ast.ImportFrom) and node.module is not None and node.level == 0:
            out.append(node.module)
            # ``from artifactstore.controlplane import gc`` imports the module gc
            out += [f"{node.module}.{alias.name}" for alias in node.names]
    return out


def violations(path: Path) -> list[str]:
    group = group_of(path)
    allowed = ALLOWED[group]
    found: list[str] = []
    for name in imports_of(path):
        parts = name.split(".")
        if parts[0] != "artifactstore":
            if parts[0] in FORBIDDEN_THIRD_PARTY.get(group, set()):
                found.append(f"{path.relative_to(PACKAGE)} imports {name}")
            continue
        inner = ".".join(parts[1:])
        if not inner or inner.split(".")[0] == group:
            continue
        ok = any(inner == a or inner.startswith(a + ".") for a in allowed)
        # ``from artifactstore.dataplane import digests`` names the package first
        ok = ok or any(a.startswith(inner + ".") for a in allowed)
        bad = any(inner == f or inner.startswith(f + ".") for f in FORBIDDEN.get(group, set()))
        if not ok or bad:
            found.append(f"{path.relative_to(PACKAGE)} imports {name}")
    return found


def test_every_module_belongs_to_a_known_group() -> None:
    groups = {group_of(p) for p in PACKAGE.rglob("*.py")}
    assert groups - set(ALLOWED) == set()


def test_the_package_root_holds_only_the_entry_points() -> None:
    root = sorted(p.name for p in PACKAGE.glob("*.py"))
    assert root == ["__init__.py", "config.py", "errors.py", "store.py"]


def test_no_module_imports_across_its_layers_rules() -> None:
    found = [v for p in sorted(PACKAGE.rglob("*.py")) for v in violations(p)]
    assert found == []


@pytest.mark.parametrize(
    ("group", "source", "forbidden"),
    [
        ("dataplane", "from artifactstore.controlplane import gc\n", True),
        ("controlplane", "from artifactstore.dataplane.backends.local import LocalBackend\n", True),
        ("client", "import sqlalchemy\n", True),
        ("client", "from artifactstore.controlplane.eventlog import Event\n", True),
        ("server", "from artifactstore.controlplane import packages\n", True),
        ("model", "from artifactstore.dataplane import layout\n", True),
        ("controlplane", "from artifactstore.dataplane.protocol import Backend\n", False),
        ("client", "from artifactstore.dataplane.digests import DualHasher\n", False),
    ],
)
def test_the_rules_catch_a_wrong_import(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, group: str, source: str, forbidden: bool
) -> None:
    """The check itself fails where it must (a rule that never fires proves nothing)."""
    fake_root = tmp_path / "artifactstore"
    module = fake_root / group / "probe.py"
    module.parent.mkdir(parents=True)
    module.write_text(source)
    monkeypatch.setattr(sys.modules[__name__], "PACKAGE", fake_root)
    assert bool(violations(module)) is forbidden


def test_a_remote_client_and_the_store_facade_load_without_sqlalchemy() -> None:
    """The rules above, transitively: what the CLI imports before it needs a database."""
    probe = (
        "import sys\n"
        "import artifactstore.client.remote, artifactstore.store, artifactstore.cli.main\n"
        "print(sorted({m.split('.')[0] for m in sys.modules} & {'sqlalchemy', 'alembic'}))\n"
    )
    done = subprocess.run(
        [sys.executable, "-c", probe], capture_output=True, text=True, check=True, timeout=60
    )
    assert done.stdout.strip() == "[]", done.stdout


def test_both_stores_implement_the_store_api() -> None:
    """mypy checks the signatures (these assignments); this checks every verb is there."""
    local: type[StoreAPI] = Store
    remote: type[StoreAPI] = RemoteStore
    verbs = [
        name
        for name, value in vars(StoreAPI).items()
        if callable(value) and not name.startswith("_")
    ]
    assert len(verbs) > 20
    for cls in (local, remote):
        assert [v for v in verbs if not callable(getattr(cls, v, None))] == []
