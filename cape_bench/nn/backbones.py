"""Image backbones that return the stride-16 feature map the CAPE head consumes.

Every backbone is a timm model built with ``pretrained=False`` and wrapped in an
:class:`ImageBackbone` whose ``forward(images)`` returns ``[B, C, H/16, W/16]``.
Which timm model, its geometry and where its weights come from are data (the
``BACKBONES`` table); the three wrapper families (SwinV2, ViT, CNN feature map)
are the only code.

Weights never download. A full-size backbone takes a local file
(``weights=PATH``, the CLI's ``--backbone-weights``), a file named as in the
table under ``$CAPE_BENCH_WEIGHTS``, or ``weights="timm"`` for a checkpoint that
is already in timm's offline cache. Without any of these it raises
:class:`WeightsMissingError` unless ``random_init=True`` is given or the build
runs under ``torch.device("meta")`` (parameter counting).

Example:
    >>> backbone = build_backbone("tiny")
    >>> backbone(torch.zeros(2, 3, 256, 256)).shape
    torch.Size([2, 192, 16, 16])
"""
from __future__ import annotations

import difflib
import os
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import timm
import torch
import torch.nn.functional as F
from torch import nn

from cape_bench.checkpoints import check_state_dict, read_state_dict
from cape_bench.errors import CheckpointError, ConfigError, RegistryError, WeightsMissingError, reject_unknown_settings

__all__ = [
    "BACKBONES",
    "WEIGHTS_ENV",
    "BackboneSpec",
    "ImageBackbone",
    "SwinV2Backbone",
    "ViTBackbone",
    "CNNFeatureBackbone",
    "build_backbone",
    "list_backbones",
    "read_state_dict",
]

WEIGHTS_ENV = "CAPE_BENCH_WEIGHTS"
"""Environment variable naming a folder of pretrained weight files (looked up by file name)."""

FEATURE_STRIDE = 16


@dataclass(frozen=True)
class BackboneSpec:
    """One row of the backbone table.

    Attributes:
        timm_name: The timm model the backbone is built from.
        family: Wrapper family: ``"swinv2"``, ``"vit"`` or ``"cnn"``.
        geometry: Default values of the user-facing overrides (``img_size``,
            ``embed_dim``, ``depths``, ``drop_path``, ...).
        weights_file: The file name a real run needs under ``$CAPE_BENCH_WEIGHTS``;
            None for test-only backbones that are random-init by design.
        weights_url: Where ``weights_file`` is published.
        timm_kwargs: Fixed extra arguments to ``timm.create_model``.
        discard_prefixes: Checkpoint keys the backbone drops on purpose (the
            classifier layers a truncated feature extractor does not have).
        note: One line on provenance, shown by ``list_backbones``.
    """

    timm_name: str
    family: str
    geometry: Mapping[str, Any]
    weights_file: str | None
    weights_url: str = ""
    timm_kwargs: Mapping[str, Any] = field(default_factory=dict)
    discard_prefixes: tuple[str, ...] = ()
    note: str = ""


_SWIN_RELEASES = "https://github.com/SwinTransformer/storage/releases/download/v2.0.0/"

BACKBONES: dict[str, BackboneSpec] = {
    # GraphCape / CapeX / CapeNext: Microsoft SwinV2 (UPSTREAM_ARCH.md section 1). The classifier
    # head stays (768->1000, unused) because upstream checkpoints carry it and the published
    # parameter counts include it.
    "swinv2_tiny": BackboneSpec(
        timm_name="swinv2_tiny_window16_256",
        family="swinv2",
        geometry=dict(img_size=256, patch_size=4, embed_dim=96, depths=(2, 2, 6, 2),
                      num_heads=(3, 6, 12, 24), window_size=16, drop_path=0.2,
                      pretrained_window_sizes=(0, 0, 0, 0), num_classes=1000),
        weights_file="swinv2_tiny_patch4_window16_256.pth",
        weights_url=_SWIN_RELEASES + "swinv2_tiny_patch4_window16_256.pth",
        note="SwinV2-T (CapeX, CapeNext); 8x8 final map upsampled x2",
    ),
    "swinv2_small": BackboneSpec(
        timm_name="swinv2_small_window16_256",
        family="swinv2",
        geometry=dict(img_size=256, patch_size=4, embed_dim=96, depths=(2, 2, 18, 2),
                      num_heads=(3, 6, 12, 24), window_size=16, drop_path=0.3,
                      pretrained_window_sizes=(0, 0, 0, 0), num_classes=1000),
        weights_file="swinv2_small_patch4_window16_256.pth",
        weights_url=_SWIN_RELEASES + "swinv2_small_patch4_window16_256.pth",
        note="SwinV2-S (GraphCape, CapeX-S); 8x8 final map upsampled x2",
    ),
    # CapeNext alternates (PROTOCOLS.md section 2.3): ViT-B/16 takes 224 crops, DINOv2 resizes 256 to 224.
    "vit_base_patch16_224": BackboneSpec(
        timm_name="vit_base_patch16_224",
        family="vit",
        geometry=dict(img_size=224, resize_to=None, patch_size=16, embed_dim=768, depth=12,
                      num_heads=12, drop_path=0.0),
        weights_file="vit_base_patch16_224.augreg2_in21k_ft_in1k.safetensors",
        weights_url="https://huggingface.co/timm/vit_base_patch16_224.augreg2_in21k_ft_in1k "
                    "(model.safetensors, renamed)",
        timm_kwargs=dict(num_classes=0),
        discard_prefixes=("head.",),
        note="ViT-B/16, 224 input, final-norm patch tokens as a 14x14 map",
    ),
    "dinov2_vits14": BackboneSpec(
        timm_name="vit_small_patch14_dinov2",
        family="vit",
        geometry=dict(img_size=256, resize_to=224, patch_size=14, embed_dim=384, depth=12,
                      num_heads=6, drop_path=0.0),
        weights_file="dinov2_vits14_pretrain.pth",
        weights_url="https://dl.fbaipublicfiles.com/dinov2/dinov2_vits14/dinov2_vits14_pretrain.pth",
        timm_kwargs=dict(num_classes=0),
        discard_prefixes=("head.",),
        note="DINOv2 ViT-S/14; 256 input resized to 224 inside, 16x16 patch map",
    ),
    # HRNet keeps four parallel resolutions; the stride-16 map is the third branch of the last
    # stage as it leaves the network (128 channels, timm feature_location=''), not timm's default
    # 'incre' features, which come from the ImageNet classification head.
    "hrnet_w32": BackboneSpec(
        timm_name="hrnet_w32",
        family="cnn",
        geometry=dict(img_size=256, size_multiple=32),
        weights_file="hrnet_w32.ms_in1k.safetensors",
        weights_url="https://huggingface.co/timm/hrnet_w32.ms_in1k (model.safetensors, renamed)",
        timm_kwargs=dict(features_only=True, feature_location="", out_indices=(3,)),
        discard_prefixes=("incre_modules.", "downsamp_modules.", "final_layer.", "classifier."),
        note="HRNet-W32, stride-16 branch of the final stage (128 ch)",
    ),
    "resnet50": BackboneSpec(
        timm_name="resnet50",
        family="cnn",
        geometry=dict(img_size=256, size_multiple=16, drop_path=0.0),
        weights_file="resnet50-0676ba61.pth",
        weights_url="https://download.pytorch.org/models/resnet50-0676ba61.pth",
        timm_kwargs=dict(features_only=True, out_indices=(3,)),
        discard_prefixes=("layer4.", "fc."),
        note="ResNet-50 layer3 (1024 ch); torchvision IMAGENET1K_V1 = mmcv torchvision://resnet50",
    ),
    # Random-init toy ResNet (timm resnet10t, widths 16-32-64, layer3 = stride 16, 64 channels) for
    # every method's `tiny` config. Measured on demo split 1, tiny GraphCape, batch 16: val PCK@0.2
    # 73.4 after 624 iterations at lr 1e-3 (0.18 s/iteration); the toy SwinV2 below had 26.9 after
    # 624 at lr 5e-4 and reached 62.2 only after 1,248 (0.25 s/iteration).
    "tiny_cnn": BackboneSpec(
        timm_name="resnet10t",
        family="cnn",
        geometry=dict(img_size=128, size_multiple=16, drop_path=0.0),
        weights_file=None,
        timm_kwargs=dict(channels=(16, 32, 64, 128), stem_width=8, features_only=True, out_indices=(3,)),
        note="toy ResNet for tests and the CPU demo (random init)",
    ),
    # Random-init SwinV2 with the upstream code path (final norm + x2 upsample) at toy size:
    # 192 channels, for tests of the SwinV2 wrapper.
    "tiny": BackboneSpec(
        timm_name="swinv2_tiny_window16_256",
        family="swinv2",
        geometry=dict(img_size=256, patch_size=4, embed_dim=24, depths=(1, 1, 1, 1),
                      num_heads=(1, 2, 3, 6), window_size=8, drop_path=0.0,
                      pretrained_window_sizes=(0, 0, 0, 0), num_classes=0),
        weights_file=None,
        note="toy SwinV2 for tests of the SwinV2 path (random init)",
    ),
}


def list_backbones() -> list[str]:
    """Names accepted by :func:`build_backbone`."""
    return sorted(BACKBONES)


# ----------------------------------------------------------------------------- wrappers


class ImageBackbone(nn.Module):
    """A timm model that maps ``[B, 3, H, W]`` images to a stride-16 ``[B, C, H/16, W/16]`` map.

    Attributes:
        name: The table name it was built from.
        model: The wrapped timm module; weights live here.
        out_channels: C of the returned map.
        input_size: The (H, W) that ``forward`` accepts.
        stride: Input pixels per feature cell (16).
    """

    family = ""
    stride = FEATURE_STRIDE

    def __init__(self, name: str, model: nn.Module, out_channels: int, input_size: tuple[int, int],
                 discard_prefixes: tuple[str, ...] = ()):
        super().__init__()
        self.name = name
        self.model = model
        self.out_channels = int(out_channels)
        self.input_size = (int(input_size[0]), int(input_size[1]))
        self.discard_prefixes = tuple(discard_prefixes)

    @property
    def feature_size(self) -> tuple[int, int]:
        """(H, W) of the returned map."""
        return self.input_size[0] // self.stride, self.input_size[1] // self.stride

    def check_input(self, images: torch.Tensor) -> None:
        """Raise ConfigError unless ``images`` is ``[B, 3, *input_size]``."""
        if images.ndim != 4 or images.shape[1] != 3 or tuple(images.shape[-2:]) != self.input_size:
            raise ConfigError(
                f"backbone {self.name!r} takes images of shape [B, 3, {self.input_size[0]}, "
                f"{self.input_size[1]}], got {list(images.shape)}; resize the crops or build the "
                f"backbone with img_size={tuple(images.shape[-2:])} if that size is allowed")

    def forward(self, images: torch.Tensor) -> torch.Tensor:  # pragma: no cover - abstract
        raise NotImplementedError

    # -- weights ---------------------------------------------------------------------------

    def convert_state_dict(self, state_dict: Mapping[str, torch.Tensor]) -> dict[str, torch.Tensor]:
        """Bring a third-party state dict (official release, upstream layout) to timm's keys."""
        return dict(state_dict)

    def load_weights(self, source: str | Path | Mapping[str, torch.Tensor]) -> None:
        """Load weights into ``self.model`` with strict key and shape checking.

        Accepts a file (``.pth``/``.pt``/``.bin``/``.safetensors``) or a state dict in timm
        layout, the official release layout (converted by timm's filter), or nested in a
        whole-model checkpoint (``{'state_dict': ...}``, ``{'model': ...}``, keys under
        ``backbone.``/``module.``/``model.``).

        Raises:
            WeightsMissingError: ``source`` names a file that does not exist.
            CheckpointError: the file cannot be read or its keys/shapes do not fit.
        """
        where = str(source) if isinstance(source, (str, Path)) else "<state dict>"
        raw = read_state_dict(source) if isinstance(source, (str, Path)) else dict(source)
        expected = self.model.state_dict()
        roots = {k.split(".", 1)[0] for k in expected}
        state_dict = _select_submodule(raw, roots)
        try:
            state_dict = self.convert_state_dict(state_dict)
        except Exception as error:  # timm's converters raise on foreign layouts
            raise CheckpointError(
                f"{where}: cannot convert the weights for backbone {self.name!r} "
                f"({type(error).__name__}: {error}); is it a {self.model.__class__.__name__} checkpoint?"
            ) from error
        state_dict = {k: v for k, v in state_dict.items() if not k.startswith(self.discard_prefixes)}
        check_state_dict(
            state_dict, {k: v for k, v in expected.items() if k in state_dict or not k.endswith("num_batches_tracked")},
            where, f"backbone {self.name!r}",
            hint="check that the file is for this backbone and that the geometry overrides "
                 "(embed_dim, depths, num_heads, window_size, img_size) match it",
        )
        self.model.load_state_dict(state_dict, strict=True)


class SwinV2Backbone(ImageBackbone):
    """SwinV2 as GraphCape/CapeX use it: final stage after the final LayerNorm, upsampled to stride 16.

    Upstream ``forward_features`` reshapes the normed ``[B, 8, 8, 768]`` tokens to NCHW and applies
    ``nn.Upsample(scale_factor=2, mode='bilinear', align_corners=False)`` (UPSTREAM_ARCH.md section 1).
    """

    family = "swinv2"

    def __init__(self, name: str, model: nn.Module, input_size: tuple[int, int], upsample: int,
                 discard_prefixes: tuple[str, ...] = ()):
        super().__init__(name, model, model.num_features, input_size, discard_prefixes)
        self.upsample = int(upsample)

    def forward(self, images: torch.Tensor) -> torch.Tensor:
        self.check_input(images)
        x = self.model.forward_features(images).permute(0, 3, 1, 2)
        if self.upsample > 1:
            return F.interpolate(x, scale_factor=self.upsample, mode="bilinear", align_corners=False)
        return x.contiguous()

    def convert_state_dict(self, state_dict):
        # Official and upstream files put PatchMerging at the end of a stage and name the
        # classifier `head`; timm's filter moves them to timm's layout and drops the
        # deterministic buffers (relative_* tables, attn_mask), which timm rebuilds.
        from timm.models.swin_transformer_v2 import checkpoint_filter_fn
        return checkpoint_filter_fn(dict(state_dict), self.model)


class ViTBackbone(ImageBackbone):
    """Plain ViT: final-norm patch tokens (prefix tokens dropped) reshaped to a map."""

    family = "vit"

    def __init__(self, name: str, model: nn.Module, input_size: tuple[int, int],
                 resize_to: tuple[int, int] | None, discard_prefixes: tuple[str, ...] = ()):
        super().__init__(name, model, model.embed_dim, input_size, discard_prefixes)
        self.resize_to = resize_to
        self.grid = tuple(model.patch_embed.grid_size)

    def forward(self, images: torch.Tensor) -> torch.Tensor:
        self.check_input(images)
        if self.resize_to is not None:
            images = F.interpolate(images, size=self.resize_to, mode="bilinear", align_corners=False)
        tokens = self.model.forward_features(images)[:, self.model.num_prefix_tokens:]
        return tokens.transpose(1, 2).reshape(tokens.shape[0], -1, *self.grid)

    def convert_state_dict(self, state_dict):
        # Handles the original DINOv2 layout (mask_token, pos_embed for 518 px) and resamples
        # pos_embed to the configured grid.
        from timm.models.vision_transformer import checkpoint_filter_fn
        return checkpoint_filter_fn(dict(state_dict), self.model)


class CNNFeatureBackbone(ImageBackbone):
    """A timm ``features_only`` CNN returning its stride-16 feature."""

    family = "cnn"

    def __init__(self, name: str, model: nn.Module, input_size: tuple[int, int],
                 discard_prefixes: tuple[str, ...] = ()):
        super().__init__(name, model, model.feature_info.channels()[-1], input_size, discard_prefixes)

    def forward(self, images: torch.Tensor) -> torch.Tensor:
        self.check_input(images)
        return self.model(images)[-1]


# ----------------------------------------------------------------------------- builders


def _pair(value: Any, what: str) -> tuple[int, int]:
    if isinstance(value, int):
        return value, value
    if isinstance(value, (tuple, list)) and len(value) == 2 and all(isinstance(v, int) for v in value):
        return int(value[0]), int(value[1])
    raise ConfigError(f"{what} must be an int or a pair of ints, got {value!r}")


def _create(spec: BackboneSpec, name: str, kwargs: dict[str, Any]) -> nn.Module:
    try:
        return timm.create_model(spec.timm_name, pretrained=False, **kwargs)
    except (TypeError, ValueError, AssertionError) as error:
        raise ConfigError(f"backbone {name!r}: timm cannot build {spec.timm_name} with {kwargs} "
                          f"({type(error).__name__}: {error})") from error


def _build_swinv2(name: str, spec: BackboneSpec, geo: dict[str, Any]) -> SwinV2Backbone:
    img = _pair(geo["img_size"], "img_size")
    patch = int(geo["patch_size"])
    depths, heads = tuple(geo["depths"]), tuple(geo["num_heads"])
    if len(depths) != len(heads):
        raise ConfigError(f"backbone {name!r}: depths {depths} and num_heads {heads} need one entry per stage")
    n = len(depths)
    final_stride = patch * 2 ** (n - 1)
    if final_stride % FEATURE_STRIDE:
        raise ConfigError(f"backbone {name!r}: patch_size {patch} with {n} stages ends at stride {final_stride}, "
                          f"which cannot be upsampled to stride {FEATURE_STRIDE}")
    for side in img:
        if side % final_stride:
            raise ConfigError(
                f"backbone {name!r}: img_size {img} is not divisible by {final_stride} "
                f"(patch_size {patch} x 2^{n - 1} patch merges); use e.g. {side // final_stride * final_stride or final_stride}")
    window = geo["window_size"]
    if isinstance(window, int):
        for i in range(n):
            for side in img:
                res = side // (patch * 2 ** i)
                # Microsoft's SwinV2 (upstream) clamps a window larger than the stage to the stage but
                # never pads; timm would pad silently, which changes the numbers, so refuse instead.
                if res > window and res % window:
                    raise ConfigError(
                        f"backbone {name!r}: stage {i} is {res}x{res} tokens at img_size {img}, "
                        f"not a multiple of window_size {window}; pick an img_size whose stage sizes "
                        f"are multiples of (or at most) the window")
    embed = int(geo["embed_dim"])
    for i, h in enumerate(heads):
        if (embed * 2 ** i) % h:
            raise ConfigError(f"backbone {name!r}: stage {i} width {embed * 2 ** i} is not divisible by "
                              f"num_heads {h}")
    kwargs = dict(spec.timm_kwargs, img_size=img, patch_size=patch, embed_dim=embed, depths=depths,
                  num_heads=heads, window_size=window, drop_path_rate=float(geo["drop_path"]),
                  pretrained_window_sizes=tuple(geo["pretrained_window_sizes"]),
                  num_classes=int(geo["num_classes"]))
    if "mlp_ratio" in geo:
        kwargs["mlp_ratio"] = float(geo["mlp_ratio"])
    model = _create(spec, name, kwargs)
    # Microsoft's BasicLayer zero-inits the residual post-norms, but the model-level
    # `apply(_init_weights)` runs afterwards and resets every LayerNorm to (1, 0); timm keeps the
    # zeros. Match upstream so a random-init backbone behaves like upstream's.
    for stage in model.layers:
        for block in stage.blocks:
            for norm in (block.norm1, block.norm2):
                nn.init.ones_(norm.weight)
                nn.init.zeros_(norm.bias)
    return SwinV2Backbone(name, model, img, final_stride // FEATURE_STRIDE, spec.discard_prefixes)


def _build_vit(name: str, spec: BackboneSpec, geo: dict[str, Any]) -> ViTBackbone:
    img = _pair(geo["img_size"], "img_size")
    patch = int(geo["patch_size"])
    resize_to = None if geo.get("resize_to") is None else _pair(geo["resize_to"], "resize_to")
    model_size = resize_to or img
    for side, model_side in zip(img, model_size):
        if model_side % patch or model_side // patch * FEATURE_STRIDE != side:
            want = side // FEATURE_STRIDE * patch
            raise ConfigError(
                f"backbone {name!r}: img_size {img}, resize_to {resize_to} and patch_size {patch} do not give "
                f"a stride-{FEATURE_STRIDE} map; the model must see img_size/16*patch_size = {want} px, "
                f"so set resize_to={want} (and an img_size divisible by {FEATURE_STRIDE})")
    kwargs = dict(spec.timm_kwargs, img_size=model_size, patch_size=patch, embed_dim=int(geo["embed_dim"]),
                  depth=int(geo["depth"]), num_heads=int(geo["num_heads"]),
                  drop_path_rate=float(geo["drop_path"]))
    model = _create(spec, name, kwargs)
    return ViTBackbone(name, model, img, resize_to, spec.discard_prefixes)


def _build_cnn(name: str, spec: BackboneSpec, geo: dict[str, Any]) -> CNNFeatureBackbone:
    img = _pair(geo["img_size"], "img_size")
    multiple = int(geo["size_multiple"])
    if any(side % multiple for side in img):
        raise ConfigError(f"backbone {name!r}: img_size {img} must be a multiple of {multiple}")
    kwargs = dict(spec.timm_kwargs)
    if "drop_path" in geo:
        kwargs["drop_path_rate"] = float(geo["drop_path"])
    model = _create(spec, name, kwargs)
    reduction = model.feature_info.reduction()[-1]
    if reduction != FEATURE_STRIDE:  # guards the table, not user input
        raise ConfigError(f"backbone {name!r}: the selected feature has stride {reduction}, not {FEATURE_STRIDE}")
    return CNNFeatureBackbone(name, model, img, spec.discard_prefixes)


_FAMILIES = {"swinv2": _build_swinv2, "vit": _build_vit, "cnn": _build_cnn}

# Overrides a family accepts beyond its table geometry.
_EXTRA_OVERRIDES = {"swinv2": {"mlp_ratio"}, "vit": set(), "cnn": set()}


def backbone_from_config(config: Mapping[str, Any], input_size: int, where: str) -> ImageBackbone:
    """The image backbone a method config names (`backbone`, `backbone_options`, `backbone_weights`).

    Checks the cheap things (a name is set, the image size equals the crops the runner makes,
    a weights path exists) before building, since a full-size backbone takes seconds to
    initialise; every error starts with `where` (the method and config).
    """
    name = config.get("backbone")
    if not isinstance(name, str):
        raise ConfigError(f"{where}: set `backbone` to a backbone name (one of {', '.join(list_backbones())})")
    options = dict(config.get("backbone_options") or {})
    if options.setdefault("img_size", input_size) != input_size:
        raise ConfigError(f"{where}: backbone_options.img_size={options['img_size']} differs from "
                          f"input_size={input_size}; the backbone must take the crops the runner makes")
    weights = config.get("backbone_weights")
    if weights is not None and str(weights) != "timm":
        weights = Path(weights).expanduser()
    if isinstance(weights, Path) and not weights.is_file():
        spec = BACKBONES.get(name)
        wanted = f"{spec.weights_file} from {spec.weights_url}" if spec and spec.weights_file else "the weights"
        raise WeightsMissingError(f"{where}: backbone_weights={str(weights)!r} does not exist; download "
                                  f"{wanted} and pass its path with --cfg-options backbone_weights=PATH")
    try:
        return build_backbone(name, weights=weights, random_init=bool(config.get("random_init")) and weights is None, **options)
    except WeightsMissingError as error:
        raise WeightsMissingError(f"{where}: {str(error).rstrip('.')}. With cape-bench, pass "
                                  f"--cfg-options backbone_weights=PATH.") from None


def _default_device_is_meta() -> bool:
    getter = getattr(torch, "get_default_device", None)
    return getter is not None and torch.device(getter()).type == "meta"


def build_backbone(name: str, weights: str | Path | None = None, random_init: bool = False,
                   **overrides: Any) -> ImageBackbone:
    """Build a registered image backbone.

    Args:
        name: A key of ``BACKBONES`` (``list_backbones()``).
        weights: A local weights file, or ``"timm"`` for timm's offline cache. When None, the
            table's file under ``$CAPE_BENCH_WEIGHTS`` is used if it exists.
        random_init: Build without pretrained weights on purpose.
        **overrides: Geometry: ``img_size``, ``embed_dim``, ``depths``/``depth``, ``num_heads``,
            ``window_size``, ``drop_path``, ``patch_size``, ``resize_to`` (ViT),
            ``pretrained_window_sizes``/``num_classes``/``mlp_ratio`` (SwinV2) as the family allows.

    Returns:
        The backbone, in train mode, on the current default device (``torch.device('meta')``
        as a context builds it without memory).

    Raises:
        RegistryError: unknown name.
        ConfigError: an unknown override or a geometry/image size the backbone cannot take.
        WeightsMissingError: a full-size backbone with no weights and no ``random_init``.
        CheckpointError: a weights file that cannot be read or does not fit.
    """
    spec = BACKBONES.get(name)
    if spec is None:
        close = difflib.get_close_matches(name, BACKBONES, n=3)
        hint = f"; did you mean {', '.join(close)}?" if close else ""
        raise RegistryError(f"unknown backbone {name!r}{hint} (known: {', '.join(list_backbones())})")
    allowed = (set(spec.geometry) | _EXTRA_OVERRIDES[spec.family]) - {"size_multiple"}
    reject_unknown_settings(overrides, allowed, f"backbone {name!r}")
    if weights is not None and random_init:
        raise ConfigError(f"backbone {name!r}: give either weights={str(weights)!r} or random_init=True, not both")
    on_meta = _default_device_is_meta()
    if weights is not None and on_meta:
        raise ConfigError(f"backbone {name!r}: cannot load weights on the meta device; build it on a real device")

    if weights is None and not random_init and spec.weights_file is not None and not on_meta:
        folder = os.environ.get(WEIGHTS_ENV)
        candidate = Path(folder) / spec.weights_file if folder else None
        if candidate is None or not candidate.is_file():
            raise WeightsMissingError(_missing_weights_message(name, spec, candidate))
        weights = candidate

    geo = dict(spec.geometry, **overrides)
    backbone = _FAMILIES[spec.family](name, spec, geo)
    if weights is not None:
        if str(weights) == "timm":
            weights = _timm_cached_file(name, spec)
        elif not Path(weights).is_file():
            raise WeightsMissingError(_missing_weights_message(name, spec, Path(weights)))
        backbone.load_weights(weights)
    return backbone


def _missing_weights_message(name: str, spec: BackboneSpec, looked_at: Path | None) -> str:
    file = spec.weights_file or "<weights file>"
    if looked_at is None:
        where = f"${WEIGHTS_ENV} is not set"
    else:
        where = f"{looked_at} does not exist"
    return (f"backbone {name!r} needs pretrained weights: download {file} from {spec.weights_url} and pass "
            f"it with --backbone-weights PATH (build_backbone(weights=PATH)), or put it at "
            f"${WEIGHTS_ENV}/{file} ({where}). To train from scratch on purpose, use random_init=True.")


def _timm_cached_file(name: str, spec: BackboneSpec) -> Path:
    """The already-downloaded timm checkpoint for ``spec``; never downloads."""
    cfg = timm.models.get_pretrained_cfg(spec.timm_name)
    looked: list[str] = []
    hf_id = getattr(cfg, "hf_hub_id", None) if cfg is not None else None
    if hf_id:
        from huggingface_hub import try_to_load_from_cache
        for filename in ("model.safetensors", "pytorch_model.bin"):
            found = try_to_load_from_cache(hf_id.rstrip("/"), filename)
            looked.append(f"HF cache {hf_id}/{filename}")
            if isinstance(found, str) and Path(found).is_file():
                return Path(found)
    url = getattr(cfg, "url", None) if cfg is not None else None
    if url:
        path = Path(torch.hub.get_dir()) / "checkpoints" / url.rsplit("/", 1)[-1]
        looked.append(str(path))
        if path.is_file():
            return path
    raise WeightsMissingError(
        f"backbone {name!r}: weights='timm' but timm's checkpoint for {spec.timm_name} is not in the "
        f"offline cache (looked at {'; '.join(looked) or 'nothing: timm has no pretrained config'}). "
        f"Fetch it on a machine with network (timm.create_model({spec.timm_name!r}, pretrained=True)) "
        f"or download {spec.weights_file} from {spec.weights_url} and pass it with --backbone-weights PATH.")


# ----------------------------------------------------------------------------- state dicts


_WRAPPER_PREFIXES = ("module.", "backbone.", "model.", "backbone.model.", "module.backbone.", "encoder.")


def _select_submodule(state_dict: Mapping[str, torch.Tensor], roots: set[str]) -> dict[str, torch.Tensor]:
    """Strip the prefix under which a whole-model checkpoint keeps the backbone."""
    if any(k.split(".", 1)[0] in roots for k in state_dict):
        return dict(state_dict)
    for prefix in sorted(_WRAPPER_PREFIXES, key=len, reverse=True):
        sub = {k[len(prefix):]: v for k, v in state_dict.items() if k.startswith(prefix)}
        if any(k.split(".", 1)[0] in roots for k in sub):
            return sub
    return dict(state_dict)



