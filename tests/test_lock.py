"""requirements.lock agrees with pyproject.toml, and this environment is the one the lock describes.

`make demo` / `make test` install only from the lock (pinned and hash-checked); these tests fail when a
dependency is added to, dropped from or re-constrained in pyproject.toml without `make lock`.
"""

from __future__ import annotations

import re
import tomllib
from importlib import metadata
from pathlib import Path

from packaging.requirements import Requirement
from packaging.utils import canonicalize_name
from packaging.version import Version

ROOT = Path(__file__).resolve().parents[1]
LOCK = ROOT / "requirements.lock"


def declared() -> list[Requirement]:
    """Every requirement of pyproject.toml: the runtime ones, the dev extra and the build system's."""
    project = tomllib.loads((ROOT / "pyproject.toml").read_text())
    lines = [*project["project"]["dependencies"], *project["project"]["optional-dependencies"]["dev"],
             *project["build-system"]["requires"]]
    return [Requirement(line) for line in lines]


def locked() -> tuple[dict[str, Version], set[str]]:
    """``{name: version}`` of every pin in the lock, and the names the lock says pyproject.toml asked for."""
    pins: dict[str, Version] = {}
    direct: set[str] = set()
    current = None
    for line in LOCK.read_text().splitlines():
        pin = re.match(r"^([A-Za-z0-9_.\-]+)==([^\s\\;]+)", line)
        if pin:
            current = canonicalize_name(pin.group(1))
            pins[current] = Version(pin.group(2))
        elif current and re.search(r"#\s+(via\s+)?sharerank \(pyproject\.toml", line):
            direct.add(current)
    return pins, direct


def test_every_declared_requirement_is_locked_at_a_version_it_allows() -> None:
    pins, _ = locked()
    problems = []
    for requirement in declared():
        name = canonicalize_name(requirement.name)
        if name not in pins:
            problems.append(f"{requirement} is not in requirements.lock")
        elif not requirement.specifier.contains(pins[name], prereleases=True):
            problems.append(f"{requirement} does not allow the locked {name}=={pins[name]}")
    assert not problems, "; ".join(problems) + " — run `make lock`"


def test_the_lock_asks_for_nothing_pyproject_does_not() -> None:
    _, direct = locked()
    wanted = {canonicalize_name(r.name) for r in declared()}
    assert direct == wanted, f"in the lock only: {sorted(direct - wanted)}; in pyproject only: " \
                             f"{sorted(wanted - direct)} — run `make lock`"


def test_every_pin_is_hashed_and_torch_is_the_cpu_wheel() -> None:
    text = LOCK.read_text()
    blocks = re.split(r"\n(?=[A-Za-z0-9_.\-]+==)", text.split("\n\n", 1)[1])
    assert all("--hash=sha256:" in block for block in blocks if "==" in block.split("\n", 1)[0])
    pins, _ = locked()
    assert str(pins["torch"]) == "2.13.0+cpu"


def test_this_environment_is_the_lock() -> None:
    pins, _ = locked()
    wrong = {}
    for name, version in pins.items():
        try:
            installed = Version(metadata.version(name))
        except metadata.PackageNotFoundError:
            wrong[name] = f"{version} locked, not installed"
            continue
        if installed != version:
            wrong[name] = f"{version} locked, {installed} installed"
    assert not wrong, f"{wrong} — recreate the environment from the lock (make clean test)"
