"""Packaging by discovery: every package below the top-level folders, in the one ``sharerank`` namespace.

pyproject.toml holds the project's metadata; setuptools cannot put discovered packages under a prefix from
there, so this file maps each top-level folder to its place in the namespace (the only list) and finds
every package below it.
"""

from setuptools import find_packages, setup

FOLDERS = {
    "sharerank": "sharerank",  # the bottom layer (config, dataset, registry) and the CLI
    "sharerank.models": "models",
    "sharerank.training": "training",
    "sharerank.serving": "serving",
    "sharerank.v1": "protos/sharerank/v1",  # the gRPC contract and its generated code
}

packages = []
for namespace, folder in FOLDERS.items():
    packages += [namespace, *(f"{namespace}.{package}" for package in find_packages(folder))]

setup(packages=packages, package_dir=FOLDERS)
