from __future__ import annotations

import os
from pathlib import Path

import pytest

from tests.mp100_fixture import write_quirky_mp100


@pytest.fixture(scope="session")
def quirky_root(tmp_path_factory) -> Path:
    return write_quirky_mp100(tmp_path_factory.mktemp("mp100"))


@pytest.fixture(scope="session")
def session_cache(tmp_path_factory) -> Path:
    """One cache for the whole session (the demo data is generated at most once), unless CAPE_BENCH_CACHE is set."""
    return Path(os.environ.get("CAPE_BENCH_CACHE") or tmp_path_factory.mktemp("cache"))


@pytest.fixture(scope="session")
def demo_root(session_cache) -> Path:
    from cape_bench.data.demo import ensure_demo_dataset

    return ensure_demo_dataset(cache_dir=session_cache)


@pytest.fixture(autouse=True)
def _isolated_environment(monkeypatch, tmp_path, session_cache):
    """No test sees the developer's MP-100 root, weights, config file or results folder."""
    monkeypatch.delenv("CAPE_BENCH_DATA", raising=False)
    monkeypatch.delenv("CAPE_BENCH_WEIGHTS", raising=False)  # no test may pick up real weights
    monkeypatch.setenv("CAPE_BENCH_CONFIG", str(tmp_path / "no-config.json"))
    monkeypatch.setenv("CAPE_BENCH_RESULTS", str(tmp_path / "results"))
    monkeypatch.setenv("CAPE_BENCH_CACHE", str(session_cache))
