"""Training pairs: category-balanced (support, query) draws, augmented crops, `CapeBatch` collation.

Mirrors the upstream training data (PROTOCOLS.md section 5):
`TransformerPoseDataset.random_paired_samples`, re-drawn after every epoch by
`ShufflePairedSamplesHook`. For every train category M pairs are drawn (M =
instance count of the largest train category), each pair is `shots + 1`
distinct instances of that category (supports first, the query last), and the
whole list is shuffled. Support and query crops are augmented independently
with mmpose's `TopDownGetRandomScaleRotation` (scale factor
clip(N(1, 0.15^2), 0.85, 1.15); rotation clip(N(0, 15^2), -30, 30) with
probability 0.6; no flip) and then cropped and normalised exactly as at test
time (`crop_instance`, PROTOCOLS.md 2.3).

Everything random is a pure function of `(seed, epoch)` (the pair list) and
`(seed, epoch, index)` (one sample's augmentation), so DataLoader workers,
DDP ranks and a resumed run all see the same data.
"""
from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
from torch.utils.data import Dataset, Sampler

from cape_bench.data.crops import Crop, crop_instance
from cape_bench.data.keypoint_texts import KeypointTexts
from cape_bench.data.layout import DatasetRoot
from cape_bench.errors import ConfigError, DatasetError
from cape_bench.method import MAX_KEYPOINTS, CapeBatch, PairBatch, QueryBatch, SupportBatch

__all__ = [
    "Augmentation",
    "EpochShardSampler",
    "TrainPairDataset",
    "TrainSample",
    "collate_pairs",
    "draw_pairs",
]


@dataclass(frozen=True)
class Augmentation:
    """mmpose `TopDownGetRandomScaleRotation` with the CAPE training values.

    Attributes:
        scale_factor: std of the scale factor, also its clip half-width.
        rotation_factor: std of the rotation in degrees; clipped to twice it.
        rotation_prob: probability that a rotation is applied at all.
    """

    scale_factor: float = 0.15
    rotation_factor: float = 15.0
    rotation_prob: float = 0.6

    def draw(self, rng: np.random.Generator) -> tuple[float, float]:
        """(rotation in degrees, scale factor) for one crop.

        Draw order as in mmpose: the scale normal, then the rotation coin, then
        the rotation normal only when the coin says so.
        """
        s = self.scale_factor
        scale = float(np.clip(rng.standard_normal() * s + 1.0, 1.0 - s, 1.0 + s))
        rotation = 0.0
        if rng.random() <= self.rotation_prob:
            r = self.rotation_factor
            rotation = float(np.clip(rng.standard_normal() * r, -2.0 * r, 2.0 * r))
        return rotation, scale


NO_AUGMENTATION = Augmentation(scale_factor=0.0, rotation_factor=0.0, rotation_prob=0.0)


def draw_pairs(pools: dict[int, list[int]], seed: int, epoch: int, shots: int = 1) -> np.ndarray:
    """The epoch's pair list: [N, shots + 1] instance indices, supports first, query last.

    Per category (in the given order) M draws of `shots + 1` distinct
    instances, M = the largest pool; then all rows are shuffled. A pure
    function of (pools, seed, epoch, shots).

    Raises:
        DatasetError: a category has fewer than `shots + 1` instances.
    """
    rng = np.random.default_rng([int(seed), int(epoch)])
    draws = max(len(pool) for pool in pools.values())
    rows = []
    for category_id, pool in pools.items():
        pool = np.asarray(pool, dtype=np.int64)
        if len(pool) < shots + 1:
            raise DatasetError(
                f"category {category_id} has {len(pool)} usable training instance(s); a training pair needs "
                f"{shots + 1} distinct ones (drop the category from the train file or add instances)"
            )
        # A random permutation per row, truncated: sampling without replacement in one vectorised step.
        order = np.argsort(rng.random((draws, len(pool))), axis=1)[:, : shots + 1]
        rows.append(pool[order])
    pairs = np.concatenate(rows)
    return pairs[rng.permutation(len(pairs))]


@dataclass
class TrainSample:
    """One training pair: `supports` crops (one per shot) and the `query` crop of `category_id`."""

    category_id: int
    supports: list[Crop]
    query: Crop


class TrainPairDataset(Dataset):
    """Category-balanced, augmented training pairs of one split (see module docstring).

    Args:
        root: The dataset.
        split: MP-100 split 1..5.
        input_size: Crop side in pixels (the method's `input_size`).
        texts: Keypoint descriptions; None gives every category an empty list.
        seed: Seed of the pair draws and of the augmentation.
        support_kinds: The method's `support_kinds`; support images are loaded
            only when it contains "image".
        subset: Annotation file to draw from ("train").
        shots: Supports per pair (upstream trains 1-shot).
        augmentation: Random scale/rotation; `NO_AUGMENTATION` for plain test crops.

    Raises:
        ConfigError: a category has more than `MAX_KEYPOINTS` keypoints.
        DatasetError: a category has too few instances, or no descriptions.
    """

    def __init__(
        self,
        root: DatasetRoot,
        split: int,
        input_size: int,
        texts: KeypointTexts | None,
        seed: int = 1,
        support_kinds=frozenset(),
        *,
        subset: str = "train",
        shots: int = 1,
        augmentation: Augmentation = Augmentation(),
    ) -> None:
        self.root = root
        self.annotations = root.load(split, subset)
        self.input_size = int(input_size)
        self.seed = int(seed)
        self.shots = int(shots)
        self.with_support_images = "image" in frozenset(support_kinds)
        self.augmentation = augmentation
        categories = self.annotations.categories
        for category in categories.values():
            if category.num_keypoints > MAX_KEYPOINTS:
                raise ConfigError(
                    f"{self.annotations.path}: category {category.id} ({category.name}) has {category.num_keypoints} keypoints; "
                    f"methods take at most {MAX_KEYPOINTS} (the upstream max_kpt_num), so split the category or drop it from the train file"
                )
        self.pools = {cid: self.annotations.instances_of(cid) for cid in categories if self.annotations.instances_of(cid)}
        if not self.pools:
            raise DatasetError(f"{self.annotations.path}: no usable training instance (filtered: {self.annotations.filtered.summary() or 'none'})")
        self.keypoint_texts = {cid: (texts.texts(categories[cid]) if texts is not None else []) for cid in self.pools}
        self.epoch = -1
        self.set_epoch(0)

    def set_epoch(self, epoch: int) -> None:
        """Re-draw the pair list for `epoch` (upstream `ShufflePairedSamplesHook`)."""
        if epoch != self.epoch:
            self.epoch = int(epoch)
            self.pairs = draw_pairs(self.pools, self.seed, self.epoch, self.shots)

    def __len__(self) -> int:
        return len(self.pairs)

    def sample_rng(self, index: int) -> np.random.Generator:
        """The augmentation generator of one sample: a function of (seed, epoch, index) only."""
        return np.random.default_rng([self.seed, self.epoch, int(index), 1])

    def __getitem__(self, index: int) -> TrainSample:
        rng = self.sample_rng(index)
        *support_ids, query_id = (int(i) for i in self.pairs[index])
        supports = [self._crop(i, rng, self.with_support_images) for i in support_ids]
        query = self._crop(query_id, rng, True)
        return TrainSample(self.annotations.instances[query_id].category_id, supports, query)

    def _crop(self, instance_index: int, rng: np.random.Generator, with_image: bool) -> Crop:
        instance = self.annotations.instances[instance_index]
        rotation, scale = self.augmentation.draw(rng)
        path: Path | None = self.root.image_path(instance) if with_image else None
        return crop_instance(instance, path, self.input_size, rotation_deg=rotation, scale_factor=scale)

    def collate(self, samples: list[TrainSample], pad_to: int | None = None) -> CapeBatch:
        """`collate_pairs` with this dataset's categories and texts."""
        return collate_pairs(samples, self.annotations.categories, self.keypoint_texts, pad_to)


def collate_pairs(samples: list[TrainSample], categories: dict, keypoint_texts: dict[int, list[str]], pad_to: int | None = None) -> CapeBatch:
    """Training samples -> one `CapeBatch`.

    K is the largest keypoint count in the batch (or `pad_to`, e.g. the 100
    fixed slots of a method with `pads_keypoints_dynamically = False`); padded
    slots are zero and invisible, so they drop out of `keypoint_mask` and
    `target_visible`. Targets are the query crop's keypoints; keypoints the
    augmentation moved outside the crop keep their coordinates and their
    annotation visibility.
    """
    batch_size, shots = len(samples), len(samples[0].supports)
    width = max(categories[s.category_id].num_keypoints for s in samples)
    if pad_to is not None:
        if pad_to < width:
            raise ConfigError(f"cannot pad a batch with {width} keypoints to {pad_to} slots")
        width = pad_to
    support_keypoints = torch.zeros(batch_size, shots, width, 2)
    support_visible = torch.zeros(batch_size, shots, width, dtype=torch.bool)
    target_keypoints = torch.zeros(batch_size, width, 2)
    target_visible = torch.zeros(batch_size, width, dtype=torch.bool)
    for b, sample in enumerate(samples):
        k = categories[sample.category_id].num_keypoints
        for s, crop in enumerate(sample.supports):
            support_keypoints[b, s, :k] = torch.from_numpy(crop.keypoints)
            support_visible[b, s, :k] = torch.from_numpy(crop.visible)
        target_keypoints[b, :k] = torch.from_numpy(sample.query.keypoints)
        target_visible[b, :k] = torch.from_numpy(sample.query.visible)
    support_images = None
    if samples[0].supports[0].image is not None:
        support_images = torch.stack([torch.stack([crop.image for crop in sample.supports]) for sample in samples])
    category_ids = [sample.category_id for sample in samples]
    skeletons = [list(categories[c].skeleton) for c in category_ids]
    return CapeBatch(
        query=QueryBatch(torch.stack([sample.query.image for sample in samples]), category_ids),
        support=SupportBatch(
            images=support_images,
            keypoints=support_keypoints,
            visible=support_visible,
            keypoint_texts=[list(keypoint_texts.get(c, [])) for c in category_ids],
            skeletons=skeletons,
            category_ids=list(category_ids),
        ),
        # The support mask of k shots is the product of their visibilities (as at test time).
        pairs=PairBatch(support_visible.all(dim=1), [list(s) for s in skeletons], [categories[c].class_name for c in category_ids]),
        target_keypoints=target_keypoints,
        target_visible=target_visible,
    )


class EpochShardSampler(Sampler[int]):
    """This rank's share of one epoch's (already shuffled) pair list, optionally skipping a prefix.

    Like `DistributedSampler(shuffle=False)`: the list is padded by wrapping
    around so every rank gets `ceil(N / world_size)` indices, rank r taking
    positions r, r + world_size, ... `start` skips that many of this rank's
    indices, so a run resumed mid-epoch continues where it stopped without
    loading the skipped images.
    """

    def __init__(self, length: int, rank: int = 0, world_size: int = 1, start: int = 0) -> None:
        self.length, self.rank, self.world_size, self.start = int(length), int(rank), int(world_size), int(start)
        self.per_rank = -(-self.length // self.world_size)

    def __iter__(self):
        total = self.per_rank * self.world_size
        indices = [i % self.length for i in range(total)][self.rank :: self.world_size]
        return iter(indices[self.start :])

    def __len__(self) -> int:
        return max(0, self.per_rank - self.start)
