"""Read and write cape-bench checkpoints, strictly.

Format: `<name>.safetensors` (tensors) plus `<name>.json` (method, config,
training metadata); `.pth`/`.pt` files holding a state dict or a dict with
`state_dict` are read too. Loading is strict: missing, unexpected and
mis-shaped keys are listed, grouped by module prefix, and nothing is loaded.
"""
from __future__ import annotations

import json
import pickle
import zipfile
from collections import defaultdict
from pathlib import Path

import torch
from torch import nn

from cape_bench.errors import CheckpointError


def save_checkpoint(model: nn.Module, path: Path, metadata: dict) -> Path:
    """Write `path` (.safetensors) and its `.json` metadata; returns the tensor file."""
    from safetensors.torch import save_file

    path = Path(path).with_suffix(".safetensors")
    path.parent.mkdir(parents=True, exist_ok=True)
    state = {k: v.detach().contiguous().cpu() for k, v in model.state_dict().items()}
    save_file(state, str(path))
    path.with_suffix(".json").write_text(json.dumps(metadata, indent=1, default=str))
    return path


def read_state_dict(path: Path) -> dict[str, torch.Tensor]:
    """Tensors of a checkpoint file, whatever its container."""
    path = Path(path)
    if not path.is_file():
        raise CheckpointError(f"{path}: checkpoint file not found")
    if path.suffix == ".safetensors":
        from safetensors import SafetensorError
        from safetensors.torch import load_file

        try:
            return load_file(str(path))
        except (SafetensorError, OSError) as error:
            raise CheckpointError(f"{path}: corrupt or truncated safetensors file ({error})") from None
    try:
        raw = torch.load(path, map_location="cpu", weights_only=True)
    except (pickle.UnpicklingError, RuntimeError, EOFError, zipfile.BadZipFile, ValueError) as error:
        raise CheckpointError(f"{path}: not a readable PyTorch checkpoint (truncated, corrupt or not a checkpoint: {error})") from None
    if isinstance(raw, dict) and isinstance(raw.get("state_dict"), dict):
        raw = raw["state_dict"]
    if not isinstance(raw, dict) or not all(isinstance(v, torch.Tensor) for v in raw.values()):
        raise CheckpointError(f"{path}: holds no state dict (expected tensors, or a dict with 'state_dict')")
    return raw


def _grouped(keys) -> str:
    groups = defaultdict(list)
    for key in keys:
        groups[key.rsplit(".", 2)[0] if key.count(".") >= 2 else key].append(key)
    return "; ".join(f"{prefix} ({len(members)})" for prefix, members in sorted(groups.items()))


def load_checkpoint(model: nn.Module, path: Path) -> None:
    """Load a checkpoint into `model` strictly, or raise listing every mismatch."""
    state = read_state_dict(path)
    expected = model.state_dict()
    if not expected:
        raise CheckpointError(f"{path}: {type(model).__name__} has no weights, so it takes no checkpoint")
    missing = sorted(set(expected) - set(state))
    unexpected = sorted(set(state) - set(expected))
    mis_shaped = sorted(k for k in set(state) & set(expected) if tuple(state[k].shape) != tuple(expected[k].shape))
    if missing or unexpected or mis_shaped:
        parts = []
        if missing:
            parts.append(f"missing {len(missing)} keys: {_grouped(missing)}")
        if unexpected:
            parts.append(f"unexpected {len(unexpected)} keys: {_grouped(unexpected)}")
        if mis_shaped:
            shown = ", ".join(f"{k} {tuple(state[k].shape)} vs {tuple(expected[k].shape)}" for k in mis_shaped[:5])
            parts.append(f"{len(mis_shaped)} shape mismatches: {shown}")
        raise CheckpointError(f"{path}: does not fit {type(model).__name__} (wrong method or size?): " + " | ".join(parts))
    model.load_state_dict(state, strict=True)
