"""Map the root-level `methods/` and `protocols/` folders into the `cape_bench` namespace.

pyproject.toml cannot express "find packages under a folder and give them a
prefix", so this is the one thing setup.py does.
"""
from setuptools import find_packages, setup


def _prefixed(folder: str) -> list[str]:
    found = find_packages(include=[folder, f"{folder}.*"])
    return [f"cape_bench.{name}" for name in found]


setup(
    packages=find_packages(include=["cape_bench", "cape_bench.*"]) + _prefixed("methods") + _prefixed("protocols"),
    package_dir={"cape_bench.methods": "methods", "cape_bench.protocols": "protocols"},
)
