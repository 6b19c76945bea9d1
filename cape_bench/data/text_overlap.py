"""How many of a split's val/test keypoint descriptions already occur in its training categories.

A frozen text encoder gives an identical string an identical embedding, so a
test keypoint whose description some training category also uses is one the
text-support head was trained on; an unseen description asks the model to
generalise across phrasings. This share, per split, is the first thing to
look at when a text-support method (CapeX, CapeNext) trails an image-support
one on some splits only. Strings are compared after case folding and
whitespace collapsing (the uncased tokenizers of CLIP, MiniLM and gte ignore
both) and nothing looser, so the share is a floor on what the encoder finds
familiar.
"""
from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

import torch
import torch.nn.functional as F

from cape_bench.data.keypoint_texts import DEFAULT_VARIANT, KeypointTexts
from cape_bench.data.layout import SPLITS, DatasetRoot
from cape_bench.data.mp100_table import mp100_categories
from cape_bench.data.records import Category

__all__ = ["CategoryOverlap", "Embed", "SplitOverlap", "dataset_overlap", "mp100_table_overlap", "render_overlap"]

EVALUATED_SUBSETS = ("val", "test")


Embed = Callable[[list[str]], torch.Tensor]
"""Strings -> one embedding row each (e.g. `functools.partial(EmbeddingCache().encode, encoder)`)."""


@dataclass(frozen=True)
class CategoryOverlap:
    """One val/test category against the split's training descriptions.

    `nearest_cosine`: with an encoder, the mean over its keypoints of the
    cosine similarity to the closest training description; a high value with
    a low `seen` share means descriptions the encoder confuses with others
    (e.g. "counting from the left" vs "... from the right").
    """

    name: str
    subset: str
    seen: int
    total: int
    nearest_cosine: float | None = None


@dataclass(frozen=True)
class SplitOverlap:
    """One split: its distinct training descriptions and a row per val/test category."""

    split: int
    train_descriptions: int
    categories: tuple[CategoryOverlap, ...]

    def fraction(self, subset: str) -> float:
        """Mean over the subset's categories of each one's seen share.

        Categories weigh equally, as they do in a split's PCK (every category
        gets the same number of episodes), whatever their keypoint count.
        """
        return self._category_mean(subset, lambda c: c.seen / c.total)

    def nearest_cosine(self, subset: str) -> float:
        """Mean over the subset's categories of `CategoryOverlap.nearest_cosine` (NaN without an encoder)."""
        return self._category_mean(subset, lambda c: float("nan") if c.nearest_cosine is None else c.nearest_cosine)

    def _category_mean(self, subset: str, value: Callable[[CategoryOverlap], float]) -> float:
        values = [value(c) for c in self.categories if c.subset == subset]
        return sum(values) / len(values) if values else float("nan")


def _normalised(text: str) -> str:
    return " ".join(text.casefold().split())


def _overlaps(categories_of: Callable[[int, str], list[Category]], texts: KeypointTexts, variant: str,
              embed: Embed | None) -> list[SplitOverlap]:
    overlaps = []
    for split in SPLITS:
        trained = sorted({t for category in categories_of(split, "train") for t in texts.texts(category, variant)})
        trained_normalised = {_normalised(t) for t in trained}
        trained_rows = None if embed is None else F.normalize(embed(trained).float(), dim=-1)
        rows = []
        for subset in EVALUATED_SUBSETS:
            for category in categories_of(split, subset):
                described = texts.texts(category, variant)
                seen = sum(_normalised(t) in trained_normalised for t in described)
                nearest = None
                if trained_rows is not None:
                    cosine = F.normalize(embed(described).float(), dim=-1) @ trained_rows.T
                    nearest = float(cosine.max(dim=1).values.mean())
                rows.append(CategoryOverlap(category.name, subset, seen, len(described), nearest))
        overlaps.append(SplitOverlap(split, len(trained_normalised), tuple(rows)))
    return overlaps


def dataset_overlap(root: DatasetRoot, keypoint_texts=None, variant: str = DEFAULT_VARIANT, embed: Embed | None = None) -> list[SplitOverlap]:
    """Overlap on every split of a dataset on disk (its split files decide the categories)."""
    texts = KeypointTexts.for_dataset(keypoint_texts, root.keypoint_texts_file)
    return _overlaps(lambda split, subset: list(root.load(split, subset).categories.values()), texts, variant, embed)


def mp100_table_overlap(keypoint_texts=None, variant: str = DEFAULT_VARIANT, embed: Embed | None = None) -> list[SplitOverlap]:
    """Overlap on the published MP-100 splits from the shipped tables; needs no local MP-100."""
    published = [
        (entry, Category(entry.id, entry.name, entry.supercategory, (), (), entry.num_keypoints, 0))
        for entry in mp100_categories().values()
    ]
    return _overlaps(lambda split, subset: [c for entry, c in published if entry.role_in_split(split) == subset],
                     KeypointTexts.for_dataset(keypoint_texts), variant, embed)


def render_overlap(overlaps: list[SplitOverlap], source: str, per_category: bool = False, encoder: str | None = None) -> str:
    """Markdown: one row per split (plus the mean), and optionally one row per val/test category."""
    cosine_header = f" val nearest cosine ({encoder}) | test nearest cosine ({encoder}) |" if encoder else ""
    lines = [
        f"Keypoint descriptions of val/test categories that occur verbatim in the split's training categories ({source})",
        "",
        "| split | distinct train descriptions | val seen | test seen |" + cosine_header,
        "|---|---|---|---|" + ("---|---|" if encoder else ""),
    ]

    def cells(values: list[float]) -> str:
        return " | ".join(f"{v:.2f}" for v in values)

    def split_cells(overlap: SplitOverlap) -> list[float]:
        values = [overlap.fraction(s) for s in EVALUATED_SUBSETS]
        return values + ([overlap.nearest_cosine(s) for s in EVALUATED_SUBSETS] if encoder else [])

    for overlap in overlaps:
        lines.append(f"| {overlap.split} | {overlap.train_descriptions} | {cells(split_cells(overlap))} |")
    columns = list(zip(*(split_cells(o) for o in overlaps)))
    lines.append(f"| mean | | {cells([sum(c) / len(c) for c in columns])} |")
    if per_category:
        lines += ["", "| split | subset | category | seen / keypoints |" + (" nearest cosine |" if encoder else ""),
                  "|---|---|---|---|" + ("---|" if encoder else "")]
        for overlap in overlaps:
            for c in overlap.categories:
                cosine = f" {c.nearest_cosine:.3f} |" if encoder else ""
                lines.append(f"| {overlap.split} | {c.subset} | {c.name} | {c.seen} / {c.total} |{cosine}")
    return "\n".join(lines)
