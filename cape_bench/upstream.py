"""Official GraphCape, CapeX and CapeNext checkpoints: what a file is, and where each of its keys goes.

An upstream checkpoint is an mmcv file (``{'state_dict', 'meta', 'optimizer'?}``) or a bare
state dict whose top-level prefixes are the upstream model's children (UPSTREAM_ARCH §0):
``backbone.`` (Microsoft SwinV2), ``text_backbone.`` (the whole frozen gte or CLIP),
``keypoint_head.`` and, for CapeNext, ``additional_module.``. This module

* **detects** which model and size a file is from its keys and shapes alone
  (:func:`detect_upstream`, :func:`detect_state_dict`): SwinV2 embed dim, depths, heads,
  window and image size; head width, layer counts, FFN and projection widths; gte or CLIP
  tower sizes; fusion width. Published sizes map to a cape-bench config, other sizes to a
  base config plus ``--cfg-options`` overrides (:class:`Detection`);
* **maps** every key onto a built cape-bench method (:func:`load_upstream`): SwinV2 onto
  timm's layout (patch merging moves to the start of the next stage, ``head`` becomes
  ``head.fc``; the deterministic buffers ``relative_coords_table``,
  ``relative_position_index`` and ``attn_mask`` are compared with the ones timm rebuilds),
  CLIP onto open_clip (``text_backbone.model.``), gte onto :mod:`cape_bench.nn.gte`
  (same names), head and fusion module by name. Nothing is dropped silently: a key is
  loaded, verified, or listed as ignored with its reason, and every parameter of the
  method must be covered (strict);
* maps back (:func:`to_upstream_state_dict`), which the parity tests use, and which writes
  cape-bench weights in the upstream layout;
* **converts** a file to a cape-bench checkpoint (:func:`convert_command`, safetensors + JSON
  metadata with method, config and overrides) and plans a ``cape-bench run --checkpoint``
  (:func:`plan_checkpoint`);
* runs a method with its frozen encoders **out of the loop** (:func:`query_from_embeddings`,
  :func:`support_from_embeddings`, :func:`put_text_embeddings`, :func:`head_output`), so
  predictions can be compared with upstream's on identical embeddings.

Example:
    >>> detection = detect_upstream("capex_split1.pth")          # doctest: +SKIP
    >>> detection.describe()                                      # doctest: +SKIP
    'CapeX-S (SwinV2-S + gte-base-en-v1.5): cape-bench --method capex --config capex_s'
    >>> method, resolved, report = load_method("capex_split1.pth")  # doctest: +SKIP
"""
from __future__ import annotations

import hashlib
import json
import math
import re
from collections.abc import Mapping, Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

import torch
from torch import Tensor, nn

from cape_bench.checkpoints import (
    check_state_dict,
    group_keys,
    read_state_dict,
    save_checkpoint,
)
from cape_bench.errors import CheckpointError, ConfigError, RegistryError

if TYPE_CHECKING:
    from cape_bench.method import Encoded, PairBatch

__all__ = [
    "UPSTREAM_VARIANTS",
    "CheckpointPlan",
    "Detection",
    "LoadReport",
    "UpstreamVariant",
    "config_overrides",
    "convert_command",
    "detect_state_dict",
    "detect_upstream",
    "head_output",
    "is_upstream_state_dict",
    "load_method",
    "load_upstream",
    "map_upstream_state_dict",
    "plan_checkpoint",
    "put_text_embeddings",
    "query_from_embeddings",
    "read_dims",
    "support_from_embeddings",
    "to_upstream_state_dict",
]

FORMAT = "cape-bench-checkpoint/1"
"""``format`` field of the JSON metadata `convert_command` writes next to the safetensors file."""

# ----------------------------------------------------------------------------- published variants (data)


@dataclass(frozen=True)
class UpstreamVariant:
    """One released upstream model: how to recognise it and which cape-bench config reproduces it.

    Attributes:
        name: Short name (``capex-s``).
        label: Human name with backbone and text encoder.
        family: ``graphcape``, ``capex`` or ``capenext``.
        text: Text tower: None, ``"gte"`` or ``"clip"``.
        swin_depths: SwinV2 depths of the image backbone (embed dim 96 for all).
        method: The cape-bench method.
        config: The cape-bench config; None means the method's declared default.
        repository: Where the checkpoints are published (GitHub repository).
        upstream_config: The upstream config files the checkpoints were trained with.
    """

    name: str
    label: str
    family: str
    text: str | None
    swin_depths: tuple[int, ...]
    method: str
    config: str | None
    repository: str
    upstream_config: str


_SWIN_T, _SWIN_S = (2, 2, 6, 2), (2, 2, 18, 2)

UPSTREAM_VARIANTS: dict[str, UpstreamVariant] = {v.name: v for v in (
    UpstreamVariant("graphcape-s", "GraphCape-S (SwinV2-S)", "graphcape", None, _SWIN_S, "graphcape", "graphcape_s",
                    "orhir/PoseAnything", "configs/1shot-swin/graph_split{1..5}_config.py"),
    UpstreamVariant("graphcape-t", "GraphCape-T (SwinV2-T)", "graphcape", None, _SWIN_T, "graphcape", "graphcape_t",
                    "orhir/PoseAnything", "configs/1shots/graph_split{1..5}_config.py"),
    UpstreamVariant("capex", "CapeX (SwinV2-T + gte-base-en-v1.5)", "capex", "gte", _SWIN_T, "capex", "capex",
                    "matanr/capex", "configs/tiny/tiny_split{1..5}_config.py (no released checkpoint)"),
    UpstreamVariant("capex-s", "CapeX-S (SwinV2-S + gte-base-en-v1.5)", "capex", "gte", _SWIN_S, "capex", "capex_s",
                    "matanr/capex", "configs/1shot-swin-gte/graph_split{1..5}_config.py (= configs/small/)"),
    UpstreamVariant("capex-clip", "CapeX-clip (SwinV2-T + CLIP ViT-B/32)", "capex", "clip", _SWIN_T, "capex",
                    "capex_clip", "matanr/capex",
                    "configs/clip/clip_split{1..5}_config.py (CapeNext's baseline; no released checkpoint)"),
    UpstreamVariant("capenext", "CapeNext (SwinV2-T + CLIP ViT-B/32 + fusion)", "capenext", "clip", _SWIN_T,
                    "capenext", None, "yzrs/CapeNext", "configs/clip/clip_split{1..5}_config.py"),
)}

# Sizes of the frozen towers as released (gte-base-en-v1.5; OpenAI ViT-B/32 = open_clip ViT-B-32-quickgelu).
_GTE_BASE = dict(vocab_size=30528, hidden_size=768, num_hidden_layers=12, num_attention_heads=12,
                 intermediate_size=3072, type_vocab_size=0)
_CLIP_B32 = dict(embed_dim=512, quick_gelu=True,
                 vision_cfg=dict(image_size=224, layers=12, width=768, patch_size=32),
                 text_cfg=dict(context_length=77, vocab_size=49408, width=512, heads=8, layers=12))
_FUSION = dict(ffn_dim=2048)
_FAMILY_LABEL = {"graphcape": "GraphCape", "capex": "CapeX", "capenext": "CapeNext"}


# ----------------------------------------------------------------------------- detection


@dataclass(frozen=True)
class Detection:
    """What a checkpoint is, and how to build the cape-bench method that takes it.

    Attributes:
        family: ``graphcape``, ``capex`` or ``capenext``.
        variant: The published variant (`UPSTREAM_VARIANTS` key), or None for another size.
        label: Human description, sizes included for non-published ones.
        method: The cape-bench method.
        config: The cape-bench config (name or file) the overrides apply to.
        overrides: ``--cfg-options`` that turn ``config`` into this size ({} when published).
        dims: Every size read off the shapes (``backbone``, ``head``, ``text``, ``fusion``).
        notes: Sizes a state dict cannot tell (attention heads) and assumptions made.
        source: ``"upstream"`` (mmcv/bare upstream layout) or ``"cape-bench"`` (converted).
    """

    family: str
    variant: str | None
    label: str
    method: str
    config: str
    overrides: dict[str, Any] = field(default_factory=dict)
    dims: dict[str, Any] = field(default_factory=dict)
    notes: tuple[str, ...] = ()
    source: str = "upstream"

    def cli_args(self) -> str:
        """The ``cape-bench run`` flags that build the method for this checkpoint."""
        args = f"--method {self.method} --config {self.config}"
        if self.overrides:
            args += " --cfg-options " + " ".join(f"{k}={json.dumps(v, separators=(',', ':'))}"
                                                 for k, v in self.overrides.items())
        return args

    def describe(self) -> str:
        return f"{self.label}: cape-bench {self.cli_args()}"

    def as_dict(self) -> dict[str, Any]:
        return asdict(self)


def _strip_wrappers(state: Mapping[str, Tensor]) -> dict[str, Tensor]:
    """Remove a DataParallel ``module.`` prefix that covers every key."""
    state = dict(state)
    if state and all(k.startswith("module.") for k in state):
        state = {k[len("module."):]: v for k, v in state.items()}
    return state


def is_upstream_state_dict(state: Mapping[str, Tensor]) -> bool:
    """True for the upstream layout: ``keypoint_head.*`` and a Microsoft-layout ``backbone.*``."""
    return ("keypoint_head.input_proj.weight" in state
            and "backbone.patch_embed.proj.weight" in state)


def _indices(state: Mapping[str, Tensor], pattern: str) -> list[int]:
    regex = re.compile(pattern)
    return sorted({int(m.group(1)) for k in state if (m := regex.match(k))})


def _count(state: Mapping[str, Tensor], pattern: str) -> int:
    found = _indices(state, pattern)
    return max(found) + 1 if found else 0


def _shape(state: Mapping[str, Tensor], key: str, where: str) -> tuple[int, ...]:
    if key not in state:
        raise CheckpointError(f"{where}: expected key {key!r} is missing; the file is not a complete "
                              f"GraphCape/CapeX/CapeNext checkpoint (truncated, or another model)")
    return tuple(state[key].shape)


def _swin_dims(state: Mapping[str, Tensor], where: str) -> dict[str, Any]:
    """SwinV2 geometry from the Microsoft-layout keys under ``backbone.``."""
    out_c, _, patch, _ = _shape(state, "backbone.patch_embed.proj.weight", where)
    stages = _count(state, r"^backbone\.layers\.(\d+)\.")
    if stages == 0:
        raise CheckpointError(f"{where}: no backbone.layers.* keys; not a SwinV2 backbone")
    depths = [_count(state, rf"^backbone\.layers\.{i}\.blocks\.(\d+)\.") for i in range(stages)]
    heads = [_shape(state, f"backbone.layers.{i}.blocks.0.attn.logit_scale", where)[0] for i in range(stages)]
    hidden, width = _shape(state, "backbone.layers.0.blocks.0.mlp.fc1.weight", where)
    windows = []
    for i in range(stages):
        key = f"backbone.layers.{i}.blocks.0.attn.relative_position_index"
        windows.append(math.isqrt(_shape(state, key, where)[0]) if key in state else None)
    known = [w for w in windows if w is not None]
    window = max(known) if known else None
    # Image size: a shifted block's attn_mask is [nW, w*w, w*w] at stage resolution w*sqrt(nW); a stage
    # whose window is smaller than the configured one was clamped to its resolution (UPSTREAM_ARCH §1).
    img_size = None
    for i in range(stages):
        for j in range(depths[i]):
            key = f"backbone.layers.{i}.blocks.{j}.attn_mask"
            if key in state and img_size is None:
                windows_n, tokens, _ = state[key].shape
                img_size = math.isqrt(tokens) * math.isqrt(windows_n) * patch * 2 ** i
        if img_size is None and windows[i] is not None and window is not None and windows[i] < window:
            img_size = windows[i] * patch * 2 ** i
    cpb_hidden = _shape(state, "backbone.layers.0.blocks.0.attn.cpb_mlp.0.weight", where)[0]
    head = state.get("backbone.head.weight")
    return dict(embed_dim=out_c, patch_size=patch, depths=depths, num_heads=heads, window_size=window,
                img_size=img_size, mlp_ratio=hidden / width, num_classes=0 if head is None else int(head.shape[0]),
                num_features=out_c * 2 ** (stages - 1), cpb_hidden=cpb_hidden)


def _head_dims(state: Mapping[str, Tensor], where: str) -> dict[str, Any]:
    """`CapeHead` sizes from ``keypoint_head.*``."""
    p = "keypoint_head."
    d_model, in_channels = _shape(state, p + "input_proj.weight", where)[:2]
    proj = "text_proj" if p + "text_proj.weight" in state else "query_proj"
    support_dim = _shape(state, f"{p}{proj}.weight", where)[1]
    enc_ff = _shape(state, p + "transformer.encoder.layers.0.linear1.weight", where)[0]
    dec_ff = _shape(state, p + "transformer.decoder.layers.0.ffn2.weight", where)[1]
    if enc_ff != dec_ff:
        raise CheckpointError(f"{where}: encoder FFN width {enc_ff} differs from decoder FFN width {dec_ff}; "
                              f"cape-bench's CapeHead has one dim_feedforward for both")
    decoder_layers = _count(state, rf"^{p}transformer\.decoder\.layers\.(\d+)\.")
    branches = _count(state, rf"^{p}kpt_branch\.(\d+)\.")
    if branches != decoder_layers:
        raise CheckpointError(f"{where}: {branches} kpt_branch heads for {decoder_layers} decoder layers; "
                              f"cape-bench needs one per layer (upstream share_kpt_branch=False)")
    return dict(
        in_channels=in_channels, support_proj=proj, support_dim=support_dim, d_model=d_model,
        num_encoder_layers=_count(state, rf"^{p}transformer\.encoder\.layers\.(\d+)\."),
        num_decoder_layers=decoder_layers, dim_feedforward=enc_ff,
        similarity_proj_dim=_shape(state, p + "transformer.proposal_generator.query_proj.weight", where)[0],
        dynamic_proj_dim=_shape(state, p + "transformer.proposal_generator.dynamic_proj.0.weight", where)[0],
        graph_ffn=p + "transformer.decoder.layers.0.ffn1.conv.weight" in state,
    )


def _text_dims(state: Mapping[str, Tensor], where: str) -> dict[str, Any] | None:
    """gte (``embeddings.word_embeddings``) or OpenAI CLIP (``token_embedding``) sizes, or None."""
    p = "text_backbone."
    if not any(k.startswith(p) for k in state):
        return None
    if p + "embeddings.word_embeddings.weight" in state:
        vocab, hidden = _shape(state, p + "embeddings.word_embeddings.weight", where)
        types = state.get(p + "embeddings.token_type_embeddings.weight")
        return dict(kind="gte", dim=hidden, config=dict(
            vocab_size=vocab, hidden_size=hidden, num_hidden_layers=_count(state, rf"^{p}encoder\.layer\.(\d+)\."),
            # Heads are not in a state dict; gte's NewModel uses 64-wide heads (768 / 12).
            num_attention_heads=max(1, hidden // 64),
            intermediate_size=_shape(state, p + "encoder.layer.0.mlp.up_gate_proj.weight", where)[0] // 2,
            type_vocab_size=0 if types is None else int(types.shape[0])))
    if p + "token_embedding.weight" in state:
        vocab, width = _shape(state, p + "token_embedding.weight", where)
        embed = _shape(state, p + "text_projection", where)[1]
        vision_width, _, patch, _ = _shape(state, p + "visual.conv1.weight", where)
        grid = math.isqrt(_shape(state, p + "visual.positional_embedding", where)[0] - 1)
        # OpenAI's clip.build_model derives the heads from the widths (width // 64); so does this.
        cfg = dict(embed_dim=embed, quick_gelu=True,
                   vision_cfg=dict(image_size=grid * patch, layers=_count(state, rf"^{p}visual\.transformer\.resblocks\.(\d+)\."),
                                   width=vision_width, patch_size=patch),
                   text_cfg=dict(context_length=_shape(state, p + "positional_embedding", where)[0], vocab_size=vocab,
                                 width=width, heads=max(1, width // 64),
                                 layers=_count(state, rf"^{p}transformer\.resblocks\.(\d+)\.")))
        if vision_width % 64:  # open_clip's heads are width / head_width (default 64); a narrower tower has one
            cfg["vision_cfg"]["head_width"] = vision_width
        return dict(kind="clip", dim=embed, config=cfg)
    raise CheckpointError(f"{where}: text_backbone.* holds neither a gte (embeddings.word_embeddings) nor a CLIP "
                          f"(token_embedding) model; keys: {group_keys([k for k in state if k.startswith(p)], 6)}")


def _fusion_dims(state: Mapping[str, Tensor], where: str) -> dict[str, Any] | None:
    p = "additional_module."
    if not any(k.startswith(p) for k in state):
        return None
    return dict(dim=_shape(state, p + "norm1.weight", where)[0], ffn_dim=_shape(state, p + "inter_ffn.0.weight", where)[0],
                has_non_linear=any(k.startswith(p + "non_linear.") for k in state))


def read_dims(state: Mapping[str, Tensor], where: str = "<state dict>") -> dict[str, Any]:
    """Every model size readable from an upstream-layout state dict.

    Raises:
        CheckpointError: the keys are not those of a GraphCape/CapeX/CapeNext checkpoint.
    """
    if not is_upstream_state_dict(state):
        raise CheckpointError(_not_upstream_message(state, where))
    dims = dict(backbone=_swin_dims(state, where), head=_head_dims(state, where), text=_text_dims(state, where),
                fusion=_fusion_dims(state, where))
    if dims["backbone"]["num_features"] != dims["head"]["in_channels"]:
        raise CheckpointError(f"{where}: the backbone ends at {dims['backbone']['num_features']} channels but the head's "
                              f"input_proj takes {dims['head']['in_channels']}; inconsistent checkpoint")
    return dims


def _not_upstream_message(state: Mapping[str, Tensor], where: str) -> str:
    if any(k.startswith("backbone.model.") for k in state):
        return (f"{where}: a cape-bench checkpoint (timm layout, backbone.model.*) without usable metadata; "
                f"pass --method and --config, or keep its .json next to it")
    prefixes = sorted({k.split(".", 1)[0] for k in state})
    return (f"{where}: not a GraphCape/CapeX/CapeNext checkpoint: expected keypoint_head.* and backbone.* "
            f"(SwinV2) keys, found {len(state)} keys under {', '.join(prefixes[:8])}"
            + (" ..." if len(prefixes) > 8 else ""))


def _family(dims: Mapping[str, Any]) -> str:
    if dims["fusion"] is not None:
        return "capenext"
    if dims["text"] is not None or dims["head"]["support_proj"] == "text_proj":
        return "capex"
    return "graphcape"


def _text_kind(family: str, dims: Mapping[str, Any]) -> str | None:
    """gte/clip from the tower, or, for a file whose frozen tower was stripped, from the text width."""
    if dims["text"]:
        return dims["text"]["kind"]
    if family == "capenext":
        return "clip"
    if family == "capex":  # CLIP ViT-B/32 gives 512-d texts; otherwise CapeX's own gte
        return "clip" if dims["head"]["support_dim"] == 512 else "gte"
    return None


def _published_variant(family: str, dims: Mapping[str, Any]) -> UpstreamVariant | None:
    text = _text_kind(family, dims)
    for variant in UPSTREAM_VARIANTS.values():
        if (variant.family == family and variant.text == text
                and tuple(dims["backbone"]["depths"]) == variant.swin_depths):
            return variant
    # A family member with another backbone (e.g. CapeX-clip on SwinV2-S): the family's first variant
    # with that text tower is the base config.
    for variant in UPSTREAM_VARIANTS.values():
        if variant.family == family and variant.text == text:
            return variant
    return None


def _method_default_config(method: str) -> str:
    from cape_bench.build import default_config
    from cape_bench.registry import METHODS

    try:
        return default_config(METHODS.canonical(method), demo=False)
    except RegistryError:
        return method  # not installed: reported when the method is built


def detect_state_dict(state: Mapping[str, Tensor], where: str = "<state dict>",
                      config: str | Path | None = None) -> Detection:
    """Which upstream model and size a state dict is, and the cape-bench method/config/overrides for it.

    Args:
        state: Upstream-layout state dict (mmcv wrapper removed).
        where: Names the source in messages.
        config: Base cape-bench config to express the size against (default: the published
            variant's config of the same family, text tower and backbone depth).

    Raises:
        CheckpointError: not an upstream checkpoint of this family.
    """
    state = _strip_wrappers(state)
    dims = read_dims(state, where)
    family = _family(dims)
    variant = _published_variant(family, dims)
    if variant is None:
        text = dims["text"]["kind"] if dims["text"] else "no"
        raise CheckpointError(f"{where}: a {_FAMILY_LABEL[family]} checkpoint with {text} text tower, which no "
                              f"published variant has; cape-bench cannot build it")
    method = variant.method
    base = str(config) if config is not None else (variant.config or _method_default_config(method))
    overrides, notes = config_overrides(dims, method, base)
    published = not overrides and (dims["fusion"] is None or dims["fusion"]["ffn_dim"] == _FUSION["ffn_dim"])
    label = variant.label if published else _size_label(family, dims)
    if variant.text is not None and dims["text"] is None:
        label += " without its frozen text tower"
        notes.append(f"the file has no text_backbone.* weights: give the {variant.text} weights with "
                     f"--cfg-options text_encoder_path=PATH")
    return Detection(family=family, variant=variant.name if published else None, label=label, method=method,
                     config=base, overrides=overrides, dims=dims, notes=tuple(notes), source="upstream")


def _size_label(family: str, dims: Mapping[str, Any]) -> str:
    b, h = dims["backbone"], dims["head"]
    parts = [f"SwinV2 embed {b['embed_dim']} depths {b['depths']} window {b['window_size']}",
             f"head d_model {h['d_model']} {h['num_encoder_layers']}+{h['num_decoder_layers']} layers "
             f"FFN {h['dim_feedforward']}"]
    text = dims["text"]
    if text and text["kind"] == "gte":
        c = text["config"]
        parts.append(f"gte {c['num_hidden_layers']}x{c['hidden_size']}")
    elif text:
        c = text["config"]
        parts.append(f"CLIP text {c['text_cfg']['layers']}x{c['text_cfg']['width']} image "
                     f"{c['vision_cfg']['layers']}x{c['vision_cfg']['width']} embed {c['embed_dim']}")
    if dims["fusion"]:
        parts.append(f"fusion {dims['fusion']['dim']}/{dims['fusion']['ffn_dim']}")
    return f"{_FAMILY_LABEL[family]} at a non-published size ({'; '.join(parts)})"


# ----------------------------------------------------------------------------- sizes -> config overrides


def _swin_geometry(resolved: Mapping[str, Any]) -> tuple[str, dict[str, Any]]:
    from cape_bench.nn.backbones import BACKBONES

    name = resolved.get("backbone")
    spec = BACKBONES.get(name) if isinstance(name, str) else None
    if spec is None or spec.family != "swinv2":
        raise ConfigError(f"config {resolved.get('config_name')!r} uses backbone {name!r}; upstream checkpoints "
                          f"hold a SwinV2 backbone (swinv2_tiny / swinv2_small)")
    geometry = dict(spec.geometry)
    geometry.setdefault("mlp_ratio", 4.0)
    geometry.update(resolved.get("backbone_options") or {})
    return name, geometry


def config_overrides(dims: Mapping[str, Any], method: str, config: str | Path) -> tuple[dict[str, Any], list[str]]:
    """``--cfg-options`` that make ``method``'s ``config`` the size described by ``dims``.

    Sizes a state dict does not record (attention heads of the head, the fusion module and
    gte) keep the config's values; they are listed in the returned notes.

    Returns:
        ``(overrides, notes)``; overrides is {} when the config already has this size.
    """
    from cape_bench.build import load_config
    from cape_bench.nn.backbones import BACKBONES
    from cape_bench.registry import METHODS

    notes: list[str] = []
    try:
        resolved = load_config(METHODS.canonical(method), config)
    except RegistryError:
        return {}, [f"method {method!r} is not installed; sizes cannot be compared with its config"]
    overrides: dict[str, Any] = {}

    # Backbone: switch between the published SwinV2 sizes by name, otherwise override the geometry.
    b = dims["backbone"]
    name, geometry = _swin_geometry(resolved)
    wanted = dict(embed_dim=b["embed_dim"], patch_size=b["patch_size"], depths=list(b["depths"]),
                  num_heads=list(b["num_heads"]), mlp_ratio=b["mlp_ratio"], num_classes=b["num_classes"])
    if b["window_size"] is not None:
        wanted["window_size"] = b["window_size"]

    def differs(geo: Mapping[str, Any]) -> dict[str, Any]:
        return {k: v for k, v in wanted.items() if _plain(geo.get(k)) != _plain(v)}

    diff = differs(geometry)
    if diff:
        for other in ("swinv2_tiny", "swinv2_small"):
            geo = dict(BACKBONES[other].geometry, mlp_ratio=4.0)
            geo.update({k: v for k, v in (resolved.get("backbone_options") or {}).items() if k not in wanted})
            if other != name and not differs(geo):
                overrides["backbone"] = other
                diff = {}
                break
    for key, value in diff.items():
        overrides[f"backbone_options.{key}"] = value
    if b["cpb_hidden"] != 512:
        raise CheckpointError(f"SwinV2 continuous position bias MLP of width {b['cpb_hidden']}; timm's SwinV2 "
                              f"(and Microsoft's) use 512")
    img = b["img_size"]
    if img is not None and img != int(resolved.get("input_size", 256)):
        overrides["input_size"] = img
        overrides["backbone_options.img_size"] = img
    if img is None:
        notes.append("image size not recoverable from the backbone buffers; using the config's input_size")

    # Head.
    h = dims["head"]
    head_cfg = dict(resolved.get("head") or {})
    for key in ("d_model", "num_encoder_layers", "num_decoder_layers", "dim_feedforward", "similarity_proj_dim",
                "dynamic_proj_dim", "graph_ffn"):
        if head_cfg.get(key) != h[key]:
            overrides[f"head.{key}"] = h[key]
    nhead = int(head_cfg.get("nhead", 8))
    if h["d_model"] % nhead:
        fitting = max(n for n in range(1, nhead + 1) if h["d_model"] % n == 0)
        overrides["head.nhead"] = fitting
        notes.append(f"head attention heads are not stored in a state dict; the config's {nhead} does not divide "
                     f"d_model {h['d_model']}, using {fitting} (set head.nhead=N to choose)")
    elif h["d_model"] != 256:
        notes.append(f"head attention heads are not stored in a state dict; using the config's {nhead} "
                     f"(set head.nhead=N if the checkpoint used another count)")

    # Text tower (the published towers are frozen gte-base-en-v1.5 / OpenAI ViT-B/32).
    text = dims["text"]
    if text is not None:
        encoder = resolved.get("text_encoder")
        want_encoder = "gte-base" if text["kind"] == "gte" else "clip-vit-b32"
        if encoder is not None and encoder != want_encoder:
            overrides["text_encoder"] = want_encoder
        options = dict(resolved.get("text_encoder_options") or {})
        if text["kind"] == "gte":
            not_released_size = any(_GTE_BASE.get(k) != v for k, v in text["config"].items())
            if not_released_size and _plain(options.get("config")) != _plain(text["config"]):
                overrides["text_encoder_options.config"] = text["config"]
                notes.append(f"gte attention heads are not stored; using hidden_size/64 = "
                             f"{text['config']['num_attention_heads']}")
        else:
            if _plain(text["config"]) != _plain(_CLIP_B32) and _plain(options.get("model_cfg")) != _plain(text["config"]):
                overrides["text_encoder_options.model_cfg"] = text["config"]
    fusion = dims["fusion"]
    if fusion is not None:
        # The fusion module belongs to the method: it names its own config keys for these sizes.
        hook = _method_hook(method, "upstream_config_overrides")
        if hook is not None:
            for key, value in hook(dims).items():
                if _plain(_dotted(resolved, key)) != _plain(value):
                    overrides[key] = value
        elif fusion["ffn_dim"] != _FUSION["ffn_dim"]:
            notes.append(f"fusion FFN width {fusion['ffn_dim']} differs from the published {_FUSION['ffn_dim']}; "
                         f"the {method} config must be given that width")
        if fusion["dim"] != 512:
            notes.append("fusion attention heads are not stored in a state dict; using the config's fusion.num_heads")
    return overrides, notes


def _dotted(config: Mapping[str, Any], key: str) -> Any:
    value: Any = config
    for part in key.split("."):
        if not isinstance(value, Mapping) or part not in value:
            return None
        value = value[part]
    return value


def _method_hook(method: str, name: str):
    from cape_bench.registry import METHODS

    try:
        return getattr(METHODS.get(method), name, None)
    except (RegistryError, ImportError):
        return None


def _plain(value: Any) -> Any:
    """Tuples as lists and ints as floats where they compare equal, for config comparisons."""
    if isinstance(value, Mapping):
        return {k: _plain(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [_plain(v) for v in value]
    if isinstance(value, bool) or value is None or isinstance(value, str):
        return value
    if isinstance(value, (int, float)):
        return float(value)
    return value


# ----------------------------------------------------------------------------- files


def _read_metadata(path: Path) -> dict[str, Any] | None:
    meta = path.with_suffix(".json")
    if path.suffix != ".safetensors" or not meta.is_file():
        return None
    try:
        data = json.loads(meta.read_text())
    except (OSError, json.JSONDecodeError) as error:
        raise CheckpointError(f"{meta}: unreadable checkpoint metadata ({error})") from error
    return data if isinstance(data, dict) and "method" in data else None


def _metadata_config(metadata: Mapping[str, Any]) -> str:
    name = metadata.get("config_name")
    if not name and isinstance(metadata.get("config"), Mapping):
        name = metadata["config"].get("config_name")
    elif not name and isinstance(metadata.get("config"), str):
        name = metadata["config"]
    return str(name) if name else _method_default_config(str(metadata["method"]))


def detect_upstream(path: str | Path, config: str | Path | None = None) -> Detection:
    """Detect what a checkpoint file is: an upstream file, or a cape-bench one with its JSON metadata.

    Raises:
        WeightsMissingError: the file does not exist.
        CheckpointError: unreadable, truncated, or not a checkpoint of this family.
    """
    path = Path(path)
    metadata = _read_metadata(path)
    if metadata is not None:
        source = metadata.get("source") or {}
        return Detection(
            family=str(source.get("family") or metadata["method"]), variant=source.get("variant"),
            label=str(source.get("label") or f"cape-bench {metadata['method']} checkpoint"),
            method=str(metadata["method"]), config=_metadata_config(metadata),
            overrides=dict(metadata.get("overrides") or {}), dims=dict(source.get("dims") or {}),
            notes=tuple(source.get("notes") or ()), source="cape-bench")
    return detect_state_dict(read_state_dict(path), str(path), config)


# ----------------------------------------------------------------------------- key maps


_SWIN_BUFFERS = ("attn.relative_coords_table", "attn.relative_position_index", "attn_mask")
_SWIN_BUFFER_KEY = re.compile(r"^layers\.\d+\.blocks\.\d+\.(attn\.relative_coords_table|attn\.relative_position_index|attn_mask)$")
_DOWNSAMPLE = re.compile(r"^layers\.(\d+)\.downsample\.(.+)$")


def _swin_to_timm(key: str) -> str:
    """Microsoft SwinV2 key -> timm key (PatchMerging ends stage i there, starts stage i+1 in timm)."""
    if m := _DOWNSAMPLE.match(key):
        return f"layers.{int(m.group(1)) + 1}.downsample.{m.group(2)}"
    if key.startswith("head."):
        return "head.fc." + key[len("head."):]
    return key


def _timm_to_swin(key: str) -> str:
    if m := _DOWNSAMPLE.match(key):
        return f"layers.{int(m.group(1)) - 1}.downsample.{m.group(2)}"
    if key.startswith("head.fc."):
        return "head." + key[len("head.fc."):]
    return key


def _text_prefix(method: nn.Module) -> tuple[str | None, str | None]:
    """(``kind``, cape-bench prefix) of the method's text tower; kind None when it has none."""
    from cape_bench.nn.gte import GteModel
    from cape_bench.nn.text_encoders import ClipTextEncoder

    encoder = getattr(method, "text_backbone", None)
    if isinstance(encoder, ClipTextEncoder):
        return "clip", "text_backbone.model."
    if isinstance(encoder, GteModel):
        return "gte", "text_backbone."
    if encoder is None:
        return None, None
    return type(encoder).__name__, None


@dataclass
class LoadReport:
    """What happened to every key of an upstream checkpoint.

    Attributes:
        source: The file (or ``<state dict>``).
        detection: What the file was detected as.
        target: ``method (config)`` it was loaded into.
        loaded: Number of tensors loaded.
        verified: Upstream buffers compared with the ones cape-bench rebuilds (not loaded).
        ignored: Upstream key -> reason it is not loaded.
        notes: Other facts (text tower equal to / differing from local weights, dtypes, ...).
    """

    source: str
    detection: Detection | None
    target: str
    loaded: int = 0
    verified: list[str] = field(default_factory=list)
    buffer_values_checked: bool = True
    ignored: dict[str, str] = field(default_factory=dict)
    notes: list[str] = field(default_factory=list)

    def render(self) -> str:
        lines = [f"{self.source}: {self.detection.label if self.detection else 'checkpoint'} -> {self.target}",
                 f"  loaded {self.loaded} tensors"]
        if self.verified:
            how = "equal to" if self.buffer_values_checked else "shaped as (meta device: values not compared)"
            lines.append(f"  verified {len(self.verified)} SwinV2 buffers (relative_coords_table, "
                         f"relative_position_index, attn_mask) {how} the ones timm rebuilds")
        by_reason: dict[str, list[str]] = {}
        for key, reason in self.ignored.items():
            by_reason.setdefault(reason, []).append(key)
        for reason, keys in by_reason.items():
            lines.append(f"  ignored {len(keys)}: {group_keys(keys, 4)}: {reason}")
        lines += [f"  note: {n}" for n in self.notes]
        return "\n".join(lines)


def map_upstream_state_dict(state: Mapping[str, Tensor], method: nn.Module, where: str = "<state dict>"
                            ) -> tuple[dict[str, Tensor], dict[str, str], dict[str, str]]:
    """Rename an upstream state dict to ``method``'s keys.

    Returns:
        ``(mapped, ignored, buffers)``: cape-bench key -> tensor; upstream key -> reason it is not
        loaded; upstream SwinV2 buffer key -> the cape-bench buffer it must equal.

    Raises:
        CheckpointError: the method's modules cannot take this checkpoint's parts (no SwinV2
            backbone, another text tower kind, no fusion module).
    """
    from cape_bench.nn.backbones import SwinV2Backbone

    state = _strip_wrappers(state)
    backbone = getattr(method, "backbone", None)
    text_kind, text_prefix = _text_prefix(method)
    has_fusion = isinstance(getattr(method, "additional_module", None), nn.Module)
    expected = set(method.state_dict())
    mapped: dict[str, Tensor] = {}
    ignored: dict[str, str] = {}
    buffers: dict[str, str] = {}
    for key, value in state.items():
        if key.startswith("backbone."):
            if not isinstance(backbone, SwinV2Backbone):
                raise CheckpointError(f"{where}: the checkpoint's backbone is SwinV2, but {type(method).__name__} "
                                      f"was built with backbone {getattr(backbone, 'name', type(backbone).__name__)!r}")
            rest = key[len("backbone."):]
            if _SWIN_BUFFER_KEY.match(rest):
                buffers[key] = "backbone.model." + rest
            else:
                mapped["backbone.model." + _swin_to_timm(rest)] = value
        elif key.startswith("text_backbone."):
            rest = key[len("text_backbone."):]
            checkpoint_kind = "gte" if rest.startswith(("embeddings.", "encoder.")) else "clip"
            if text_kind is None:
                ignored[key] = ("the method runs on precomputed text embeddings (text_encoder=None), so the "
                                "checkpoint's frozen text tower is not used")
            elif text_prefix is None or text_kind != checkpoint_kind:
                raise CheckpointError(
                    f"{where}: the checkpoint's text tower is {checkpoint_kind}, but the method's text encoder is "
                    f"{text_kind}; build the method with text_encoder="
                    f"{'gte-base' if checkpoint_kind == 'gte' else 'clip-vit-b32'}")
            else:
                mapped[text_prefix + rest] = value
        elif key.startswith("keypoint_head."):
            mapped[key] = value
        elif key.startswith("additional_module."):
            if not has_fusion:
                raise CheckpointError(f"{where}: a CapeNext checkpoint (fusion module additional_module.*), but "
                                      f"{type(method).__name__} has no fusion module; use --method capenext")
            if key not in expected and key.startswith("additional_module.non_linear."):
                ignored[key] = ("built but never called by upstream SimpleMultiModalModule "
                                "(UPSTREAM_ARCH §3: dead code)")
            else:
                mapped[key] = value
        else:
            mapped[key] = value  # reported as unexpected by the strict check
    return mapped, ignored, buffers


def _fingerprint(tensors: Sequence[Tensor]) -> str:
    digest = hashlib.blake2b(digest_size=8)
    for tensor in tensors:
        array = tensor.detach().to("cpu", torch.float32).reshape(-1).contiguous().view(torch.uint8).numpy()
        digest.update(array.reshape(-1).data)
    return digest.hexdigest()


def _on_meta(module: nn.Module) -> bool:
    return any(t.is_meta for t in module.state_dict().values())


def load_upstream(method: nn.Module, source: str | Path | Mapping[str, Tensor], detection: Detection | None = None,
                  strict_buffers: bool = True, where: str | None = None) -> LoadReport:
    """Load an upstream checkpoint into a built cape-bench method, strictly; nothing is loaded on error.

    Args:
        method: The method (e.g. from ``build_method(..., overrides={'random_init': True})``).
        source: An upstream file or state dict.
        detection: Its detection, if already known (used in messages).
        strict_buffers: Raise when a SwinV2 buffer of the checkpoint differs from the one timm
            rebuilds (a geometry the config does not describe).
        where: Names the source in messages (default: the path, or ``<state dict>``).

    Returns:
        A `LoadReport`.

    Raises:
        CheckpointError: missing, unexpected or mis-shaped keys (listed), with what the file looks like.
    """
    where = where or (str(source) if isinstance(source, (str, Path)) else "<state dict>")
    state = _strip_wrappers(read_state_dict(source) if isinstance(source, (str, Path)) else source)
    subject = _subject(method)
    if detection is None:
        try:
            detection = detect_state_dict(state, where)
        except (CheckpointError, ConfigError) as error:
            raise CheckpointError(str(error)) from None
    hint = f"the file looks like {detection.describe()}"
    try:
        mapped, ignored, buffers = map_upstream_state_dict(state, method, where)
    except CheckpointError as error:
        raise CheckpointError(f"{error} | {hint}") from None
    expected = method.state_dict()
    report = LoadReport(where, detection, subject, ignored=ignored)
    text_in_file = any(k.startswith("text_backbone.") for k in state)
    encoder = getattr(method, "text_backbone", None)
    if not text_in_file and _text_prefix(method)[1] is not None:
        # A file without its frozen text tower (stripped to save space): the method's own tower
        # must then hold real weights, from the user's local files.
        if "random-init" in str(getattr(encoder, "encoder_id", "random-init")):
            raise CheckpointError(f"{where} holds no text_backbone.* weights (the frozen text tower was left out), "
                                  f"and {subject} has no local text-encoder weights either; pass "
                                  f"--cfg-options text_encoder_path=PATH (gte-base-en-v1.5 folder or ViT-B-32.pt)")
        expected = {k: v for k, v in expected.items() if not k.startswith("text_backbone.")}
        report.notes.append(f"text tower from the local weights ({encoder.encoder_id}); the file has none")
    check_state_dict(mapped, expected, where, subject, hint=hint)

    meta = _on_meta(method)
    named_buffers = dict(method.named_buffers())
    mismatched = []
    report.buffer_values_checked = not meta and not any(state[k].is_meta for k in buffers)
    for key, target in buffers.items():
        mine = named_buffers.get(target)
        theirs = state[key]
        if mine is None or tuple(mine.shape) != tuple(theirs.shape):
            mismatched.append(f"{key}: file {list(theirs.shape)} vs model "
                              f"{'absent' if mine is None else list(mine.shape)}")
        elif not meta and not theirs.is_meta and not torch.allclose(mine.double(), theirs.double(), atol=1e-5, rtol=0):
            mismatched.append(f"{key}: values differ (max |diff| "
                              f"{(mine.double() - theirs.double()).abs().max().item():.3g})")
        report.verified.append(key)
    if mismatched and strict_buffers:
        raise CheckpointError(f"{where}: {len(mismatched)} SwinV2 buffers differ from those of {subject}'s backbone "
                              f"({'; '.join(mismatched[:4])}); the checkpoint was built with another window, image "
                              f"size or pretrained_window_sizes | {hint}")
    report.notes += [f"buffer differs: {m}" for m in mismatched]

    text_keys = [k for k in mapped if k.startswith("text_backbone.")]
    local_weights = (encoder is not None and text_keys and not meta
                     and "random-init" not in str(getattr(encoder, "encoder_id", "random-init")))
    if local_weights:
        diff = max((expected[k].double() - mapped[k].double()).abs().max().item() for k in text_keys)
        report.notes.append("the checkpoint's text tower equals the local weights" if diff == 0 else
                            f"the checkpoint's text tower differs from the local weights (max |diff| {diff:.3g}); "
                            f"the checkpoint's weights are used")
        retag = diff != 0
    else:
        retag = bool(text_keys) and not meta
    dtypes = sorted({str(v.dtype).replace("torch.", "") for v in mapped.values() if v.is_floating_point()})
    if len(dtypes) > 1:
        report.notes.append(f"stored dtypes {', '.join(dtypes)}; loaded into the method's float32 parameters")

    strict = text_in_file or _text_prefix(method)[1] is None
    if meta:
        method.load_state_dict(mapped, strict=strict, assign=True)
    else:
        method.load_state_dict(mapped, strict=strict)  # non-strict only for the local text tower, checked above
    report.loaded = len(mapped)
    if retag:
        _retag_text_encoder(method, [dict(method.state_dict())[k] for k in text_keys], report)
    text_dims = detection.dims.get("text") or {}
    if text_dims.get("kind") == "gte" and retag and not local_weights and getattr(encoder, "tokenizer", None) is not None:
        report.notes.append("gte tokenizer: the BERT-uncased word pieces of the packaged MiniLM (gte-base-en-v1.5 "
                            "uses the same vocabulary); set text_encoder_path=<gte folder> to use gte's own files")
    return report


def _retag_text_encoder(method: nn.Module, tensors: list[Tensor], report: LoadReport) -> None:
    """Give a text encoder that now holds checkpoint weights an id naming those weights.

    The `EmbeddingCache` keys rows by ``encoder_id``; a random-init id (or a local folder's id
    with other weights) would mix rows of different weights.
    """
    encoder = method.text_backbone
    old = str(encoder.encoder_id)
    kind = old.split(":", 1)[0]
    suffix = f":max{encoder.max_length}" if hasattr(encoder, "max_length") else ""
    encoder.encoder_id = f"{kind}:upstream-{_fingerprint(tensors)}{suffix}"
    if getattr(method, "_text_encoder_id", None) == old:
        method._text_encoder_id = encoder.encoder_id
    report.notes.append(f"text encoder id {encoder.encoder_id} (embedding-cache key of these weights)")


def _subject(method: nn.Module) -> str:
    config = getattr(method, "config", {}) or {}
    name = getattr(method, "method_name", type(method).__name__)
    return f"{name} (config {config.get('config_name', '<dict>')})"


def to_upstream_state_dict(method: nn.Module) -> dict[str, Tensor]:
    """``method``'s weights in the upstream layout (the inverse of `map_upstream_state_dict`).

    SwinV2 buffers are written as timm computes them; a method without the fusion module's
    unused ``non_linear`` gets it as zeros when it has ``additional_module`` (upstream builds it).

    Raises:
        CheckpointError: a part has no upstream counterpart (a non-SwinV2 backbone, a text
            encoder other than gte/CLIP, or no text encoder).
    """
    from cape_bench.nn.backbones import SwinV2Backbone

    backbone = getattr(method, "backbone", None)
    if not isinstance(backbone, SwinV2Backbone):
        raise CheckpointError(f"{_subject(method)}: upstream checkpoints hold a SwinV2 backbone, not "
                              f"{getattr(backbone, 'name', type(backbone).__name__)!r}")
    text_kind, text_prefix = _text_prefix(method)
    if hasattr(method, "text_backbone") and text_prefix is None:
        raise CheckpointError(f"{_subject(method)}: the upstream layout needs the gte or CLIP text tower; this method "
                              f"has {text_kind or 'none (precomputed embeddings)'}")
    out: dict[str, Tensor] = {}
    for key, value in method.state_dict().items():
        if key.startswith("backbone.model."):
            out["backbone." + _timm_to_swin(key[len("backbone.model."):])] = value
        elif text_prefix is not None and key.startswith(text_prefix):
            out["text_backbone." + key[len(text_prefix):]] = value
        else:
            out[key] = value
    for name, value in backbone.model.named_buffers():
        if name.endswith(_SWIN_BUFFERS):
            out["backbone." + name] = value
    fusion = getattr(method, "additional_module", None)
    if isinstance(fusion, nn.Module) and not any(k.startswith("additional_module.non_linear.") for k in out):
        dim = out["additional_module.norm1.weight"].shape[0]
        ffn = out["additional_module.inter_ffn.0.weight"].shape[0]
        zeros = dict(weight0=torch.zeros(ffn, dim), bias0=torch.zeros(ffn), weight3=torch.zeros(dim, ffn),
                     bias3=torch.zeros(dim))
        out.update({"additional_module.non_linear.0.weight": zeros["weight0"],
                    "additional_module.non_linear.0.bias": zeros["bias0"],
                    "additional_module.non_linear.3.weight": zeros["weight3"],
                    "additional_module.non_linear.3.bias": zeros["bias3"]})
    return out


# ----------------------------------------------------------------------------- building from a checkpoint


@dataclass(frozen=True)
class CheckpointPlan:
    """How to build the method for a checkpoint: what ``cape-bench run --checkpoint`` does first."""

    method: str
    config: str
    overrides: dict[str, Any]
    detection: Detection


def plan_checkpoint(path: str | Path, method: str | None = None, config: str | Path | None = None,
                    overrides: Mapping[str, Any] | None = None) -> CheckpointPlan:
    """Choose method, config and overrides for a checkpoint file (upstream or converted).

    A published upstream variant selects its own config; ``method``/``config`` given by the
    user must agree with it (a config *file* is accepted as the base of the size overrides).
    The checkpoint provides every weight, so ``random_init=True`` is added (no backbone or
    text-encoder file is needed); the user's overrides come last and win.

    Raises:
        CheckpointError: the file is another method or size than asked for (the message says
            what it looks like), or it cannot be read.
    """
    from cape_bench.registry import METHODS

    path = Path(path)
    detection = detect_upstream(path)
    if method is not None:
        try:
            wanted = METHODS.canonical(method)
        except RegistryError:
            wanted = method
        if wanted != detection.method:
            raise CheckpointError(f"{path} is not a {wanted} checkpoint: it looks like {detection.describe()}")
    chosen = detection.config
    if config is not None and str(config) != detection.config:
        as_file = Path(config).is_file()
        if detection.source == "upstream" and as_file:
            detection = detect_state_dict(read_state_dict(path), str(path), config)
            chosen = str(config)
        else:
            raise CheckpointError(f"{path} does not match --config {config}: it looks like {detection.describe()}; "
                                  f"drop --config (it is chosen from the file) or pass the config it names")
    try:
        METHODS.canonical(detection.method)
    except RegistryError:
        raise CheckpointError(f"{path} is a {detection.label} checkpoint, but the {detection.method!r} method is not "
                              f"installed in this cape-bench") from None
    merged = dict(detection.overrides)
    merged["random_init"] = True
    merged.update(overrides or {})
    return CheckpointPlan(detection.method, chosen, merged, detection)


def load_method(path: str | Path, method: str | None = None, config: str | Path | None = None,
                overrides: Mapping[str, Any] | None = None, device: str | torch.device | None = None):
    """Build the method a checkpoint belongs to and load it (upstream or converted file), in eval mode.

    Returns:
        ``(method, resolved_config, report)``; ``report`` is a `LoadReport` for an upstream
        file and None for a cape-bench checkpoint (which loads key for key).

    Raises:
        CheckpointError: see `plan_checkpoint` and `load_upstream`.
    """
    built, resolved, report, _ = _build_and_load(Path(path), plan_checkpoint(path, method, config, overrides))
    if device is not None:
        built = built.to(device)
    return built, resolved, report


def _build_and_load(path: Path, plan: CheckpointPlan):
    from cape_bench.build import build_method
    from cape_bench.checkpoints import load_checkpoint

    built, resolved = build_method(plan.method, plan.config, plan.overrides)
    report = load_checkpoint(built, path)
    if isinstance(report, LoadReport):
        report.detection = plan.detection
    built.eval()
    return built, resolved, report, plan


def _sha256(path: Path) -> str:
    digest = hashlib.sha256()
    with path.open("rb") as handle:
        for block in iter(lambda: handle.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


def convert_command(source: str | Path, target: str | Path | None = None, *, method: str | None = None,
                    config: str | Path | None = None, cfg_options: Sequence[str] | None = None,
                    to_upstream: bool = False, quiet: bool = False) -> int:
    """``cape-bench convert IN [OUT]``: say what a checkpoint is, and write it as a cape-bench checkpoint.

    Without ``target`` it prints the detection (model, size, the ``run`` flags) and exits.
    With it, it writes ``OUT.safetensors`` (every tensor of the method, frozen text towers
    included) and ``OUT.json`` (``format``, ``method``, ``config_name``, ``overrides``, the
    resolved config, and the source file's detection, sha256 and ignored keys), then reads the
    safetensors back and checks every tensor is identical. With ``to_upstream=True`` it writes an
    mmcv-style ``.pth`` (``{'state_dict', 'meta'}``) in the upstream layout instead.

    Returns:
        0 on success (errors raise `CheckpointError` / `ConfigError`).
    """
    if target is None:
        detection = detect_upstream(source)
        if not quiet:
            print(_render_detection(Path(source), detection))
        return 0
    from cape_bench.build import parse_overrides

    source, target = Path(source), Path(target)
    plan = plan_checkpoint(source, method, config, parse_overrides(list(cfg_options or [])))
    built, resolved, report, plan = _build_and_load(source, plan)
    if to_upstream:
        target = target if target.suffix in (".pth", ".pt") else target.with_name(target.name + ".pth")
        target.parent.mkdir(parents=True, exist_ok=True)
        torch.save({"state_dict": {k: v.detach().cpu() for k, v in to_upstream_state_dict(built).items()},
                    "meta": {"converted_by": "cape-bench", "method": resolved["method"],
                             "config_name": resolved["config_name"], "source": str(source)}}, target)
        if not quiet:
            print(f"wrote {target} (upstream layout of {plan.detection.label})")
        return 0
    if target.suffix != ".safetensors":
        target = target.with_name(target.name + ".safetensors")
    upstream = isinstance(report, LoadReport)
    # random_init only says "the checkpoint brings every weight"; a later load adds it again.
    overrides = {k: v for k, v in plan.overrides.items() if k != "random_init"}
    metadata = {
        "format": FORMAT, "kind": "converted", "method": resolved["method"], "config_name": resolved["config_name"],
        "overrides": overrides, "config": resolved,
        "source": {"file": source.name, "sha256": _sha256(source), **_detection_record(plan.detection),
                   "ignored": dict(report.ignored) if upstream else {},
                   "verified_buffers": len(report.verified) if upstream else 0},
    }
    written = save_checkpoint(built, target, metadata)
    _verify_written(built, written)
    if not quiet:
        if upstream:
            print(report.render())
        print(f"wrote {written} and {written.with_suffix('.json')}; load it with "
              f"`cape-bench run --checkpoint {written}` (method and config come from the .json)")
    return 0


def _render_detection(path: Path, detection: Detection) -> str:
    lines = [f"{path}: {detection.label}" + (f" [{detection.variant}]" if detection.variant else ""),
             f"  run it with: cape-bench run --checkpoint {path}  (= {detection.cli_args()})"]
    variant = UPSTREAM_VARIANTS.get(detection.variant or "")
    if variant is not None:
        lines.append(f"  published by {variant.repository}, trained with {variant.upstream_config}")
    backbone = detection.dims.get("backbone") or {}
    if backbone:
        lines.append(f"  SwinV2: embed {backbone['embed_dim']}, depths {backbone['depths']}, heads {backbone['num_heads']}, "
                     f"window {backbone['window_size']}, image {backbone['img_size']}")
    head = detection.dims.get("head") or {}
    if head:
        lines.append(f"  head: d_model {head['d_model']}, {head['num_encoder_layers']} encoder + "
                     f"{head['num_decoder_layers']} decoder layers, FFN {head['dim_feedforward']}, "
                     f"{head['support_proj']} {head['support_dim']}->{head['d_model']}")
    lines += [f"  note: {n}" for n in detection.notes]
    return "\n".join(lines)


def _detection_record(detection: Detection) -> dict[str, Any]:
    return {"family": detection.family, "variant": detection.variant, "label": detection.label,
            "dims": detection.dims, "notes": list(detection.notes), "detected_as": detection.source}


def _verify_written(method: nn.Module, path: Path) -> None:
    written = read_state_dict(path)
    state = method.state_dict()
    different = [k for k, v in state.items() if k not in written or not torch.equal(v.cpu(), written[k])]
    if different or set(written) - set(state):
        raise CheckpointError(f"{path}: written tensors do not read back identically ({group_keys(different, 4)}); "
                              f"the file system may be full or the file was modified while writing")


# ----------------------------------------------------------------------------- encoders out of the loop
#
# Upstream parity is checked with the frozen encoders out of the loop: the same keypoint-text,
# class-prompt and query-image embeddings go into both implementations. A family method's stages
# are `encode_query` -> Encoded(per_item={"features", "image_embedding"?}), `encode_support` ->
# Encoded(per_keypoint={"embeddings", "mask"}) and `decode`; these helpers build the encodings
# from given tensors and return the head's full output (proposals and every decoder layer).


def support_from_embeddings(embeddings: Tensor, mask: Tensor) -> Encoded:
    """The support encoding of per-keypoint embeddings ``[B, K, D]`` and their mask ``[B, K]``.

    For CapeX/CapeNext the embeddings are the L2-normalised keypoint-text embeddings of the
    masked-in slots (zero elsewhere), upstream's ``point_descriptions``; for GraphCape they are
    the pooled support-keypoint features (UPSTREAM_ARCH §2).
    """
    from cape_bench.method import Encoded

    if embeddings.ndim != 3 or mask.shape != embeddings.shape[:2]:
        raise ConfigError(f"support embeddings must be [B, K, D] with a [B, K] mask, got {list(embeddings.shape)} "
                          f"and {list(mask.shape)}")
    mask = mask.to(torch.bool)
    return Encoded(per_keypoint={"embeddings": embeddings * mask[..., None].to(embeddings.dtype), "mask": mask})


def query_from_embeddings(method: nn.Module, images: Tensor | None = None, *, features: Tensor | None = None,
                          image_embeddings: Tensor | None = None) -> Encoded:
    """The query encoding without the frozen encoders: backbone map (run or given) + given image embeddings.

    Args:
        method: A GraphCape/CapeX/CapeNext-family method.
        images: ``[B, 3, H, W]`` ImageNet-normalised crops; the image backbone runs on them.
        features: ``[B, C, h, w]`` backbone features instead of ``images``.
        image_embeddings: ``[B, D]`` query-image embeddings (CapeNext: the CLIP image tower's
            L2-normalised output, ``per_item["image_embedding"]``); the CLIP image tower is not run.
    """
    from cape_bench.method import Encoded

    if features is None:
        if images is None:
            raise ConfigError("query_from_embeddings needs images or features")
        features = method.backbone(images)
    per_item = {"features": features}
    if image_embeddings is not None:
        per_item["image_embedding"] = image_embeddings
    return Encoded(per_item=per_item)


def put_text_embeddings(method: nn.Module, texts: Sequence[str], embeddings: Tensor) -> None:
    """Serve ``texts`` (keypoint descriptions, class prompts) from ``embeddings`` instead of the text encoder.

    Rows go into the method's `EmbeddingCache` under its ``text_encoder_id``, so the method
    never encodes these strings. CapeNext's class prompt is the full string it encodes (e.g.
    ``"a photo of zebra body"``).

    Raises:
        ConfigError: the method has no text-embedding cache, or the shapes do not fit.
    """
    cache = getattr(method, "embedding_cache", None)
    encoder_id = getattr(method, "text_encoder_id", None)
    if cache is None or encoder_id is None:
        raise ConfigError(f"{type(method).__name__} encodes no text (no embedding_cache / text_encoder_id)")
    cache.put(encoder_id, list(texts), embeddings)


def head_output(method: nn.Module, query: Encoded, support: Encoded, pairs: PairBatch):
    """Run ``method.decode`` and return the keypoint head's full `HeadOutput`.

    ``decode`` returns only the final keypoints; this captures what ``keypoint_head`` computed
    on the way (similarity map, full and local proposals, every decoder layer's output), which
    is what upstream's ``forward_test`` exposes as ``points`` and its intermediate outputs.

    Raises:
        ConfigError: the method has no ``keypoint_head`` or ``decode`` did not call it.
    """
    head = getattr(method, "keypoint_head", None)
    if not isinstance(head, nn.Module):
        raise ConfigError(f"{type(method).__name__} has no keypoint_head")
    captured = []
    handle = head.register_forward_hook(lambda module, args, output: captured.append(output))
    try:
        method.decode(query, support, pairs)
    finally:
        handle.remove()
    if not captured:
        raise ConfigError(f"{type(method).__name__}.decode did not call its keypoint_head")
    return captured[-1]
