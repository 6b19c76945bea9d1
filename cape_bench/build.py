"""Method name + config name (+ overrides) -> a built `CapeMethod`.

Configs are mmengine Python config files in each method's `configs/` folder
(`_base_` inheritance works); `--cfg-options a.b=c` style overrides are
applied on top. The resolved config is saved with every result.
"""
from __future__ import annotations

import hashlib
import json
from importlib import resources
from pathlib import Path

import torch

from cape_bench.errors import ConfigError
from cape_bench.method import CapeMethod
from cape_bench.registry import METHODS

DEMO_CONFIG = "tiny"


def method_package(name: str) -> str:
    module = METHODS.target(name).partition(":")[0]
    return module.rsplit(".", 1)[0] if module.endswith(".model") else module


def config_dir(name: str) -> Path:
    return Path(str(resources.files(method_package(name)).joinpath("configs")))


def list_configs(name: str) -> list[str]:
    folder = config_dir(name)
    return sorted(path.stem for path in folder.glob("*.py") if not path.stem.startswith("_")) if folder.is_dir() else []


def default_config(name: str, demo: bool) -> str:
    """`tiny` on the demo data when the method has it, else the method's declared default."""
    configs = list_configs(name)
    if demo and DEMO_CONFIG in configs:
        return DEMO_CONFIG
    declared = METHODS.info(name).get("default_config")
    if declared:
        return declared
    if not configs:
        raise ConfigError(f"method {name!r} has no configs in {config_dir(name)}")
    return configs[0]


def parse_overrides(pairs: list[str] | None) -> dict:
    """["a.b=1", "c=[1,2]"] -> {"a.b": 1, "c": [1, 2]} (values parsed as JSON when they are JSON)."""
    overrides = {}
    for pair in pairs or []:
        key, sep, value = pair.partition("=")
        if not sep or not key:
            raise ConfigError(f"override {pair!r} is not KEY=VALUE")
        try:
            overrides[key] = json.loads(value)
        except json.JSONDecodeError:
            overrides[key] = value
    return overrides


def load_config(name: str, config: str | Path, overrides: dict | None = None) -> dict:
    """The resolved config of a method as a plain dict."""
    from mmengine.config import Config

    path = Path(config)
    if not path.is_file():
        path = config_dir(name) / f"{config}.py"
    if not path.is_file():
        raise ConfigError(f"method {name!r} has no config {str(config)!r}; available: {', '.join(list_configs(name)) or 'none'}")
    cfg = Config.fromfile(str(path))
    if overrides:
        cfg.merge_from_dict(overrides)
    resolved = cfg.to_dict()
    resolved["config_name"] = path.stem
    return resolved


def config_hash(payload: dict) -> str:
    return hashlib.sha256(json.dumps(payload, sort_keys=True, default=str).encode()).hexdigest()


def build_method(name: str, config: str | Path | None = None, overrides: dict | None = None, demo: bool = False) -> tuple[CapeMethod, dict]:
    """Build `name` with a config; returns (method, resolved config)."""
    canonical = METHODS.canonical(name)
    resolved = load_config(canonical, config or default_config(canonical, demo), overrides)
    method_class = METHODS.get(canonical)
    # Initial weights are part of a run's identity: seed them (config `init_seed`, default 0).
    torch.manual_seed(int(resolved.get("init_seed", 0)))
    try:
        method = method_class(resolved)
    except TypeError as error:
        raise ConfigError(f"method {canonical!r}, config {resolved['config_name']!r}: {error}") from None
    resolved["method"] = canonical
    return method, resolved
