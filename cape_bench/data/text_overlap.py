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

from cape_bench.data.keypoint_texts import DEFAULT_VARIANT, KeypointTexts
from cape_bench.data.layout import SPLITS, DatasetRoot
from cape_bench.data.mp100_table import mp100_categories
from cape_bench.data.records import Category

__all__ = ["CategoryOverlap", "SplitOverlap", "dataset_overlap", "mp100_table_overlap", "render_overlap"]

EVALUATED_SUBSETS = ("val", "test")


@dataclass(frozen=True)
class CategoryOverlap:
    """One val/test category: how many of its descriptions occur in the split's training categories."""

    name: str
    subset: str
    seen: int
    total: int


@dataclass(frozen=True)
class SplitOverlap:
    split: int
    train_descriptions: int
    categories: tuple[CategoryOverlap, ...]

    def fraction(self, subset: str) -> float:
        """Mean over the subset's categories of each one's seen share.

        Categories weigh equally, as they do in a split's PCK (every category
        gets the same number of episodes), whatever their keypoint count.
        """
        shares = [c.seen / c.total for c in self.categories if c.subset == subset]
        return sum(shares) / len(shares) if shares else float("nan")


def _normalised(text: str) -> str:
    return " ".join(text.casefold().split())


def _overlaps(categories_of: Callable[[int, str], list[Category]], texts: KeypointTexts, variant: str) -> list[SplitOverlap]:
    overlaps = []
    for split in SPLITS:
        trained = {_normalised(t) for category in categories_of(split, "train") for t in texts.texts(category, variant)}
        rows = []
        for subset in EVALUATED_SUBSETS:
            for category in categories_of(split, subset):
                described = [_normalised(t) for t in texts.texts(category, variant)]
                rows.append(CategoryOverlap(category.name, subset, sum(t in trained for t in described), len(described)))
        overlaps.append(SplitOverlap(split, len(trained), tuple(rows)))
    return overlaps


def dataset_overlap(root: DatasetRoot, keypoint_texts=None, variant: str = DEFAULT_VARIANT) -> list[SplitOverlap]:
    """Overlap on every split of a dataset on disk (its split files decide the categories)."""
    texts = KeypointTexts.for_dataset(keypoint_texts, root.keypoint_texts_file)
    return _overlaps(lambda split, subset: list(root.load(split, subset).categories.values()), texts, variant)


def mp100_table_overlap(keypoint_texts=None, variant: str = DEFAULT_VARIANT) -> list[SplitOverlap]:
    """Overlap on the published MP-100 splits from the shipped tables; needs no local MP-100."""
    published = [
        (entry, Category(entry.id, entry.name, entry.supercategory, (), (), entry.num_keypoints, 0))
        for entry in mp100_categories().values()
    ]
    return _overlaps(lambda split, subset: [c for entry, c in published if entry.role_in_split(split) == subset],
                     KeypointTexts.for_dataset(keypoint_texts), variant)


def render_overlap(overlaps: list[SplitOverlap], source: str, per_category: bool = False) -> str:
    """Markdown: one row per split (plus the mean), and optionally one row per val/test category."""
    lines = [
        f"Keypoint descriptions of val/test categories that occur verbatim in the split's training categories ({source})",
        "",
        "| split | distinct train descriptions | val seen | test seen |",
        "|---|---|---|---|",
    ]
    for overlap in overlaps:
        lines.append(f"| {overlap.split} | {overlap.train_descriptions} | {overlap.fraction('val'):.2f} | {overlap.fraction('test'):.2f} |")
    means = {s: sum(o.fraction(s) for o in overlaps) / len(overlaps) for s in EVALUATED_SUBSETS}
    lines.append(f"| mean | | {means['val']:.2f} | {means['test']:.2f} |")
    if per_category:
        lines += ["", "| split | subset | category | seen / keypoints |", "|---|---|---|---|"]
        for overlap in overlaps:
            lines += [f"| {overlap.split} | {c.subset} | {c.name} | {c.seen} / {c.total} |" for c in overlap.categories]
    return "\n".join(lines)
