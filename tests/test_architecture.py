"""The layer contract (pyproject.toml, ``[tool.importlinter]``) holds, and it fails on a back arrow.

import-linter reads a package from disk, but this project maps its top-level folders into one namespace
(setup.py), so the check runs on that installed layout, built here as a tree of symlinks in a temporary
folder. The failure cases run it on such a tree with one throwaway module added to a copy of a folder.
"""

from __future__ import annotations

import ast
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]


def folders() -> dict[str, str]:
    """setup.py's map of namespace → top-level folder, read without running setup()."""
    tree = ast.parse((ROOT / "setup.py").read_text())
    (value,) = [node.value for node in tree.body if isinstance(node, ast.Assign)
                and any(getattr(t, "id", None) == "FOLDERS" for t in node.targets)]
    return ast.literal_eval(value)


def installed_layout(destination: Path, copied: tuple[str, ...] = ()) -> Path:
    """``destination/sharerank/...`` as the package installs, each folder a symlink (or a copy, for the
    namespaces in ``copied``, so a test may add a module there)."""
    top = destination / "sharerank"
    top.mkdir(parents=True)
    for namespace, folder in folders().items():
        source = ROOT / folder
        if namespace == "sharerank":
            for entry in source.iterdir():
                if entry.name != "__pycache__":
                    (top / entry.name).symlink_to(entry)
            continue
        target = top / namespace.split(".", 1)[1]
        if namespace in copied:
            shutil.copytree(source, target, ignore=shutil.ignore_patterns("__pycache__"))
        else:
            target.symlink_to(source)
    return destination


def lint_imports(layout: Path, config: Path = ROOT / "pyproject.toml") -> subprocess.CompletedProcess:
    script = Path(sys.executable).with_name("lint-imports")
    return subprocess.run([str(script), "--config", str(config), "--no-cache"], cwd=layout,
                          capture_output=True, text=True, timeout=300,
                          env={**os.environ, "PYTHONPATH": str(layout)})


def test_the_layers_hold(tmp_path: Path) -> None:
    result = lint_imports(installed_layout(tmp_path))
    assert result.returncode == 0, result.stdout[-4000:] + result.stderr[-2000:]
    assert "Contracts: 2 kept, 0 broken." in result.stdout


@pytest.mark.parametrize(("namespace", "module", "imports", "contract"), [
    ("sharerank.models", "recommenders/_back_arrow.py", "from sharerank.training.feed import train", "Layers"),
    ("sharerank.serving", "_back_arrow.py", "import sharerank.training.jobs", "Layers"),
    ("sharerank.training", "_back_arrow.py", "from sharerank.serving import server", "Layers"),
    ("sharerank.models", "seeding/_back_arrow.py", "import mlflow", "Models are pure"),
])
def test_a_back_arrow_breaks_the_contract(tmp_path: Path, namespace: str, module: str, imports: str,
                                          contract: str) -> None:
    layout = installed_layout(tmp_path, copied=(namespace,))
    (layout / "sharerank" / namespace.split(".", 1)[1] / module).write_text(f'"""A back arrow."""\n{imports}\n')
    result = lint_imports(layout)
    assert result.returncode == 1, result.stdout[-4000:]
    broken = f"{namespace}.{module.removesuffix('.py').replace('/', '.')}"
    assert contract in result.stdout and "BROKEN" in result.stdout and broken in result.stdout, result.stdout[-3000:]


CLIENT_CONTRACT = """[importlinter]
root_package = sharerank
include_external_packages = True

[importlinter:contract:client]
name = The client stands alone: the contract and the settings, none of the server or the ML stack
type = forbidden
source_modules = sharerank.client
forbidden_modules =
    sharerank.serving
    sharerank.training
    sharerank.models
    sharerank.registry
    sharerank.console
    sharerank.cli
    torch
    mlflow
"""
"""sharerank.client runs in storefronts and growth tools: it may import sharerank.v1 and sharerank.config only."""


def client_layout(tmp_path: Path, back_arrow: str | None = None) -> tuple[Path, Path]:
    """The installed layout and the client contract's config; with ``back_arrow``, a copy of the client holding a
    module that imports it (the layout links the real folder otherwise)."""
    layout = installed_layout(tmp_path / "layout")
    if back_arrow is not None:
        client = layout / "sharerank" / "client"
        client.unlink()
        shutil.copytree(ROOT / "sharerank" / "client", client, ignore=shutil.ignore_patterns("__pycache__"))
        (client / "_back_arrow.py").write_text(f'"""A back arrow."""\n{back_arrow}\n')
    config = tmp_path / "client-contract.ini"
    config.write_text(CLIENT_CONTRACT)
    return layout, config


def test_the_client_imports_none_of_the_server(tmp_path: Path) -> None:
    result = lint_imports(*client_layout(tmp_path))
    assert result.returncode == 0, result.stdout[-4000:] + result.stderr[-2000:]
    assert "Contracts: 1 kept, 0 broken." in result.stdout


def test_a_client_import_of_the_server_breaks_its_contract(tmp_path: Path) -> None:
    result = lint_imports(*client_layout(tmp_path, "from sharerank.serving.errors import error_info"))
    assert result.returncode == 1, result.stdout[-4000:]
    assert "BROKEN" in result.stdout and "sharerank.client._back_arrow" in result.stdout, result.stdout[-3000:]
