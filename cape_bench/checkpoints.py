"""Read and write cape-bench checkpoints, strictly.

Format: `<name>.safetensors` (tensors) plus `<name>.json` (method, config,
training metadata); `.pth`/`.pt` files holding a state dict or a dict with
`state_dict` are read too. Loading is strict: missing, unexpected and
mis-shaped keys are listed, grouped by module prefix, and nothing is loaded.
"""
from __future__ import annotations

import json
import warnings
import zipfile
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import torch
from torch import nn

from cape_bench.errors import CheckpointError, WeightsMissingError


def save_checkpoint(model: nn.Module, path: Path, metadata: dict) -> Path:
    """Write `path` (.safetensors) and its `.json` metadata; returns the tensor file."""
    from safetensors.torch import save_file

    path = Path(path).with_suffix(".safetensors")
    path.parent.mkdir(parents=True, exist_ok=True)
    state = {k: v.detach().contiguous().cpu() for k, v in model.state_dict().items()}
    save_file(state, str(path))
    path.with_suffix(".json").write_text(json.dumps(metadata, indent=1, default=str))
    return path


def read_state_dict(path: str | Path) -> dict[str, torch.Tensor]:
    """Read a weights file into a flat ``{key: tensor}`` dict (wrappers like 'state_dict' removed).

    Raises:
        WeightsMissingError: the file does not exist.
        CheckpointError: it cannot be read as a state dict.
    """
    path = Path(path)
    if not path.is_file():
        raise WeightsMissingError(f"weights file {path} does not exist")
    try:
        if path.suffix == ".safetensors":
            from safetensors.torch import load_file
            obj: Any = load_file(str(path), device="cpu")
        elif _is_torchscript(path):
            with warnings.catch_warnings():  # torch.jit.load is deprecated; OpenAI CLIP ships this format
                warnings.simplefilter("ignore", FutureWarning)
                obj = torch.jit.load(str(path), map_location="cpu").state_dict()
        else:
            try:
                obj = _torch_load(path, weights_only=True)
            except Exception:
                # mmcv/mmengine checkpoints pickle their `meta` (numpy, config objects); the user
                # named this local file, so read it in full.
                obj = _torch_load(path, weights_only=False)
    except Exception as error:
        raise CheckpointError(f"{path}: cannot read weights ({type(error).__name__}: {error}); "
                              f"expected a .pth/.pt/.bin state dict or a .safetensors file") from error
    for key in ("state_dict", "model", "module", "state_dict_ema"):
        if isinstance(obj, Mapping) and key in obj and isinstance(obj[key], Mapping) \
                and not isinstance(obj[key], torch.Tensor):
            obj = obj[key]
            break
    if not isinstance(obj, Mapping) or not obj or not all(isinstance(v, torch.Tensor) for v in obj.values()):
        raise CheckpointError(f"{path}: not a state dict (expected a mapping of parameter names to tensors, "
                              f"possibly under 'state_dict' or 'model')")
    return dict(obj)


def _torch_load(path: Path, weights_only: bool) -> Any:
    # Zip-format files are memory-mapped: a run reads an upstream checkpoint twice (detect, then
    # load) and copies it into the model once, without holding a second full copy in memory.
    if zipfile.is_zipfile(path):
        try:
            return torch.load(path, map_location="cpu", weights_only=weights_only, mmap=True)
        except (RuntimeError, ValueError, TypeError):
            pass
    return torch.load(path, map_location="cpu", weights_only=weights_only)


def _is_torchscript(path: Path) -> bool:
    if not zipfile.is_zipfile(path):
        return False
    with zipfile.ZipFile(path) as archive:
        return any(n.endswith("constants.pkl") or "/code/" in n for n in archive.namelist())


def group_keys(keys: list[str], limit: int = 12) -> str:
    groups: dict[str, list[str]] = {}
    for key in sorted(keys):
        parts = key.split(".")
        prefix = ".".join(parts[:2]) if len(parts) > 2 else parts[0]
        groups.setdefault(prefix, []).append(key)
    shown = [f"{p}.* ({len(v)}: {', '.join(k[len(p) + 1:] or k for k in v[:3])}{', ...' if len(v) > 3 else ''})"
             if len(v) > 1 or v[0] != p else p for p, v in list(groups.items())[:limit]]
    if len(groups) > limit:
        shown.append(f"... {len(groups) - limit} more prefixes")
    return "; ".join(shown)


def check_state_dict(state_dict: Mapping[str, torch.Tensor], expected: Mapping[str, torch.Tensor], where: str, subject: str, hint: str = "") -> None:
    """Raise `CheckpointError` listing missing / unexpected / mis-shaped keys, grouped by prefix."""
    missing = sorted(k for k in expected if k not in state_dict)
    unexpected = sorted(k for k in state_dict if k not in expected)
    mismatched = [f"{k}: file {list(v.shape)} vs model {list(expected[k].shape)}"
                  for k, v in state_dict.items() if k in expected and v.shape != expected[k].shape]
    if not (missing or unexpected or mismatched):
        return
    lines = [f"{where} does not fit {subject}"]
    if missing:
        lines.append(f"missing {len(missing)} keys: {group_keys(missing)}")
    if unexpected:
        lines.append(f"unexpected {len(unexpected)} keys: {group_keys(unexpected)}")
    if mismatched:
        lines.append(f"{len(mismatched)} shape mismatches: {'; '.join(mismatched[:8])}" + (" ..." if len(mismatched) > 8 else ""))
    if hint:
        lines.append(hint)
    raise CheckpointError(" | ".join(lines))


def load_checkpoint(model: nn.Module, path: Path):
    """Load a checkpoint into `model` strictly, or raise listing every mismatch; nothing is loaded on error.

    Accepts cape-bench checkpoints (keys equal to ``model.state_dict()``) and official
    GraphCape/CapeX/CapeNext files (mmcv or bare, upstream layout), whose keys are mapped by
    :func:`cape_bench.upstream.load_upstream`.

    Returns:
        None for a cape-bench checkpoint; a `cape_bench.upstream.LoadReport` for an upstream one.

    Raises:
        CheckpointError: unreadable file, or keys/shapes that do not fit (with what the file looks like).
    """
    expected = model.state_dict()
    if not expected:
        raise CheckpointError(f"{path}: {type(model).__name__} has no weights, so it takes no checkpoint")
    state = read_state_dict(path)
    if state and all(k.startswith("module.") for k in state) and not any(k.startswith("module.") for k in expected):
        state = {k[len("module."):]: v for k, v in state.items()}
    from cape_bench import upstream

    if upstream.is_upstream_state_dict(state) and not upstream.is_upstream_state_dict(expected):
        return upstream.load_upstream(model, state, where=str(path))
    check_state_dict(state, expected, str(path), type(model).__name__, hint=_looks_like(path, state))
    model.load_state_dict(state, strict=True)
    return None


def _looks_like(path: Path, state: Mapping[str, torch.Tensor]) -> str:
    """'the file looks like ...' for a checkpoint that does not fit, when it can be told."""
    from cape_bench import upstream

    try:
        if upstream.is_upstream_state_dict(state):
            return "the file looks like " + upstream.detect_state_dict(state, str(path)).describe()
        detection = upstream.detect_upstream(path)
        return "the file looks like " + detection.describe()
    except Exception:  # noqa: BLE001 - a hint only; the mismatch list is the error
        return "wrong method or size?"
