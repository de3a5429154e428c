"""One import namespace over the top-level folders, installable with a plain `pip install .`."""

from __future__ import annotations

import shutil
import subprocess
import sys
import tomllib
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]


def declared() -> tuple[list[str], dict[str, str]]:
    config = tomllib.loads((ROOT / "pyproject.toml").read_text())["tool"]["setuptools"]
    return config["packages"], config["package-dir"]


def folder_of(package: str, package_dir: dict[str, str]) -> Path:
    parts = package.split(".")
    for cut in range(len(parts), 0, -1):
        head = ".".join(parts[:cut])
        if head in package_dir:
            return ROOT / package_dir[head] / Path(*parts[cut:])
    raise AssertionError(f"{package} maps to no folder")


def test_every_package_folder_is_declared() -> None:
    packages, package_dir = declared()
    on_disk = set()
    for top in ("sharerank", "models", "training", "serving", "protos/sharerank/v1"):
        for init in (ROOT / top).rglob("__init__.py"):
            on_disk.add(init.parent)
    assert on_disk == {folder_of(p, package_dir) for p in packages}


def test_plain_install_imports_every_subpackage(tmp_path: Path) -> None:
    # From a copy, so the build leaves nothing (build/, *.egg-info) in the checkout.
    source = tmp_path / "source"
    shutil.copytree(ROOT, source, ignore=shutil.ignore_patterns(".git", ".venv", "build", "*.egg-info", ".sharerank",
                                                                 "__pycache__", "bench", "notebooks", "tests"))
    target = tmp_path / "site"
    subprocess.run([sys.executable, "-m", "pip", "install", "-q", "--no-deps", "--no-build-isolation",
                    "--target", str(target), str(source)], check=True, cwd=tmp_path)
    packages, _ = declared()
    code = "import importlib, sys; [importlib.import_module(p) for p in sys.argv[1:]]; " \
           "import sharerank.v1.feed_service_pb2 as m; print(m.__file__)"
    out = subprocess.run([sys.executable, "-c", code, *packages], check=True, cwd=tmp_path, capture_output=True,
                         text=True, env={"PYTHONPATH": str(target), "PATH": "/usr/bin:/bin"})
    assert out.stdout.strip().startswith(str(target))
