"""Text embeddings computed once per distinct string.

Keypoint names and class prompts repeat across every episode of a category, so methods ask the
cache, not the encoder: ``cache.encode(encoder, texts)`` runs the encoder once, batched, on the
strings it has not seen for that ``encoder_id`` and returns rows in the requested order.
Precomputed embeddings can be injected with ``put`` (or ``load``), after which a method can be
served by encoder id alone, without loading the encoder.

Example:
    >>> from cape_bench.nn.text_encoders import HashTextEncoder
    >>> cache, encoder = EmbeddingCache(), HashTextEncoder(dim=8)
    >>> cache.encode(encoder, ["nose", "tail", "nose"]).shape
    torch.Size([3, 8])
    >>> cache.misses, cache.hits
    (2, 1)
"""
from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

import torch

from cape_bench.errors import CheckpointError, ConfigError
from cape_bench.nn.text_encoders import TextEncoder

__all__ = ["EmbeddingCache"]


class EmbeddingCache:
    """Embeddings keyed by ``(encoder_id, text)``, stored as float32 on ``device``.

    Counters: ``misses`` counts strings sent to an encoder, ``hits`` counts requested rows served
    without encoding (repeats within one call included), ``encoder_calls`` counts ``encode`` calls
    made on encoders.

    Args:
        device: Where rows are kept and returned.
    """

    def __init__(self, device: str | torch.device = "cpu"):
        self.device = torch.device(device)
        self._rows: dict[str, dict[str, torch.Tensor]] = {}
        self.hits = 0
        self.misses = 0
        self.encoder_calls = 0

    # -- lookup -------------------------------------------------------------------------------

    def encode(self, encoder: TextEncoder | str, texts: Sequence[str]) -> torch.Tensor:
        """Return ``[len(texts), dim]`` embeddings, encoding only strings not cached yet.

        Args:
            encoder: A text encoder, or an encoder id whose rows were injected with ``put``.
            texts: The strings, in the order the rows should come back (repeats allowed).

        Raises:
            ConfigError: ``texts`` is not a list of strings; an id-only lookup misses strings;
                the encoder returns the wrong shape.
        """
        if isinstance(texts, str) or not all(isinstance(t, str) for t in texts):
            raise ConfigError(f"EmbeddingCache.encode takes a list of strings, got {texts!r:.80}")
        encoder_id = encoder if isinstance(encoder, str) else encoder.encoder_id
        rows = self._rows.setdefault(encoder_id, {})
        missing = list(dict.fromkeys(t for t in texts if t not in rows))
        if missing:
            if isinstance(encoder, str):
                shown = ", ".join(repr(t) for t in missing[:5]) + (" ..." if len(missing) > 5 else "")
                raise ConfigError(
                    f"no cached embedding under encoder id {encoder_id!r} for {len(missing)} text(s): {shown}; "
                    f"put() them first or pass the encoder itself so they can be computed")
            fresh = encoder.encode(missing)
            self.encoder_calls += 1
            self._store(encoder_id, missing, fresh, source=f"encoder {encoder_id!r}")
        self.misses += len(missing)
        self.hits += len(texts) - len(missing)
        if not texts:
            dim = self.dim(encoder_id) or getattr(encoder, "dim", 0)
            return torch.empty(0, dim, device=self.device)
        return torch.stack([rows[t] for t in texts])

    def put(self, encoder_id: str, texts: Sequence[str], embeddings: torch.Tensor) -> None:
        """Inject precomputed embeddings (row i belongs to ``texts[i]``); later rows win on repeats.

        Raises:
            ConfigError: lengths or dimensions do not match.
        """
        if isinstance(texts, str):
            raise ConfigError("EmbeddingCache.put takes a list of strings, not one string")
        self._store(encoder_id, list(texts), embeddings, source="put()")

    def _store(self, encoder_id: str, texts: list[str], embeddings: torch.Tensor, source: str) -> None:
        if not isinstance(embeddings, torch.Tensor) or embeddings.ndim != 2 or embeddings.shape[0] != len(texts):
            shape = list(embeddings.shape) if isinstance(embeddings, torch.Tensor) else type(embeddings).__name__
            raise ConfigError(f"{source} gave embeddings of shape {shape} for {len(texts)} texts; "
                              f"expected [{len(texts)}, dim]")
        dim = self.dim(encoder_id)
        if dim is not None and embeddings.shape[1] != dim:
            raise ConfigError(f"{source} gave {embeddings.shape[1]}-d embeddings but encoder id "
                              f"{encoder_id!r} already holds {dim}-d ones")
        rows = self._rows.setdefault(encoder_id, {})
        values = embeddings.detach().to(self.device, torch.float32)
        for text, row in zip(texts, values):
            rows[text] = row

    # -- inspection ---------------------------------------------------------------------------

    def dim(self, encoder_id: str) -> int | None:
        """Embedding size stored for ``encoder_id``, None when nothing is stored."""
        for row in self._rows.get(encoder_id, {}).values():
            return int(row.shape[0])
        return None

    def encoder_ids(self) -> list[str]:
        return [k for k, v in self._rows.items() if v]

    def texts(self, encoder_id: str) -> list[str]:
        return list(self._rows.get(encoder_id, {}))

    def __contains__(self, key: tuple[str, str]) -> bool:
        encoder_id, text = key
        return text in self._rows.get(encoder_id, {})

    def __len__(self) -> int:
        return sum(len(v) for v in self._rows.values())

    def __repr__(self) -> str:
        return (f"EmbeddingCache({len(self)} rows, {len(self.encoder_ids())} encoders, device={self.device}, "
                f"hits={self.hits}, misses={self.misses})")

    def clear(self, encoder_id: str | None = None) -> None:
        """Drop every row, or the rows of one encoder id (counters are kept)."""
        if encoder_id is None:
            self._rows.clear()
        else:
            self._rows.pop(encoder_id, None)

    def to(self, device: str | torch.device) -> EmbeddingCache:
        """Move every stored row to ``device``; returns self."""
        self.device = torch.device(device)
        for rows in self._rows.values():
            for text in rows:
                rows[text] = rows[text].to(self.device)
        return self

    # -- files --------------------------------------------------------------------------------

    def save(self, path: str | Path) -> None:
        """Write ``{encoder_id: {"texts": [...], "embeddings": [N, dim]}}`` with ``torch.save``."""
        payload = {eid: {"texts": list(rows), "embeddings": torch.stack(list(rows.values())).cpu()}
                   for eid, rows in self._rows.items() if rows}
        torch.save(payload, Path(path))

    def load(self, path: str | Path) -> EmbeddingCache:
        """Add the rows of a file written by ``save``; returns self.

        Raises:
            CheckpointError: the file is missing or not in that format.
        """
        path = Path(path)
        try:
            payload = torch.load(path, map_location="cpu", weights_only=True)
            for encoder_id, entry in payload.items():
                self.put(encoder_id, entry["texts"], entry["embeddings"])
        except (OSError, RuntimeError, KeyError, TypeError, AttributeError, ConfigError) as error:
            raise CheckpointError(f"{path}: not an embedding cache file written by EmbeddingCache.save "
                                  f"({type(error).__name__}: {error})") from error
        return self
