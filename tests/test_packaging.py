"""A plain `pip install .` (what library users do) installs every package of the one `sharerank` namespace."""

from __future__ import annotations

import shutil
import subprocess
import sys
from pathlib import Path

from test_architecture import ROOT, folders


def packages_on_disk() -> list[str]:
    """Every folder with an ``__init__.py`` below the top-level folders, as the name it installs under."""
    names = []
    for namespace, folder in folders().items():
        for init in sorted((ROOT / folder).rglob("__init__.py")):
            relative = init.parent.relative_to(ROOT / folder)
            names.append(".".join((namespace, *relative.parts)))
    return names


def test_plain_install_imports_every_package_on_disk(tmp_path: Path) -> None:
    # From a copy, so the build leaves nothing (build/, *.egg-info) in the checkout.
    source = tmp_path / "source"
    shutil.copytree(ROOT, source, ignore=shutil.ignore_patterns(".git", ".venv", "build", "*.egg-info", ".sharerank",
                                                                 "__pycache__", "bench", "notebooks", "tests"))
    target = tmp_path / "site"
    subprocess.run([sys.executable, "-m", "pip", "install", "-q", "--no-deps", "--no-build-isolation",
                    "--target", str(target), str(source)], check=True, cwd=tmp_path)
    packages = packages_on_disk()
    assert {"sharerank.dataset", "sharerank.models.recommenders", "sharerank.serving.api"} <= set(packages)
    code = "import importlib, sys; [importlib.import_module(p) for p in sys.argv[1:]]; " \
           "import sharerank.v1.feed_service_pb2 as m; print(m.__file__)"
    out = subprocess.run([sys.executable, "-c", code, *packages], check=True, cwd=tmp_path, capture_output=True,
                         text=True, env={"PYTHONPATH": str(target), "PATH": "/usr/bin:/bin"})
    assert out.stdout.strip().startswith(str(target))
