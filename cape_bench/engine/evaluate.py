"""The evaluation runner: episodes -> predictions in original image pixels.

Fast path (default): per category, every distinct query and support instance
is cropped once (DataLoader workers), each query crop and each support is
encoded once, and `decode` runs over many pairs per batch with K = the
category's keypoint count, once per distinct set of decode inputs (for a
text-support method, pairs that differ only in a fully visible support
collapse into one). Naive path: every pair on its own at batch size 1
with the 100 padded slots, as the upstream test loop does. Both must give the
same numbers; `tests/test_fast_eval.py` holds them to it for every method.
"""
from __future__ import annotations

import contextlib
import hashlib
from collections import OrderedDict
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
from torch.utils.data import DataLoader

from cape_bench.data.crops import Crop, CropDataset, crop_instance, keep_crops
from cape_bench.data.episodes import Episode
from cape_bench.data.layout import DatasetRoot
from cape_bench.data.records import AnnotationSet, Category
from cape_bench.data.transforms import apply_affine, invert_affine
from cape_bench.method import MAX_KEYPOINTS, CapeBatch, CapeMethod, Encoded, PairBatch, QueryBatch, SupportBatch


@dataclass
class Prompts:
    """The text a method sees: descriptions per category, class name per pair (pair order)."""

    keypoint_texts: dict[int, list[str]]
    class_names: list[str]


@dataclass
class Predictions:
    """Per (support, query) pair, in pair order; keypoint arrays padded to the split's max K."""

    keypoints: np.ndarray
    ground_truth: np.ndarray
    mask: np.ndarray
    normalizer: np.ndarray
    category_ids: np.ndarray
    episode_ids: np.ndarray
    query_ids: np.ndarray
    support_ids: np.ndarray

    def save(self, path: Path) -> None:
        np.savez_compressed(path, **self.__dict__)

    @classmethod
    def load(cls, path: Path) -> "Predictions":
        with np.load(path) as data:
            return cls(**{name: data[name] for name in cls.__dataclass_fields__})


def enumerate_pairs(episodes: list[Episode]) -> list[tuple[int, int]]:
    """(episode index, query instance index) for every pair, in upstream order."""
    return [(e, query) for e, episode in enumerate(episodes) for query in episode.queries]


class QueryCache:
    """Encoded queries per category, reusable across runs on the same episodes (e.g. a robustness sweep).

    Bounded: at most `max_categories` entries, least recently used dropped first.
    """

    def __init__(self, max_categories: int = 32) -> None:
        self.max_categories = max_categories
        self._entries: OrderedDict = OrderedDict()

    def get(self, key):
        if key in self._entries:
            self._entries.move_to_end(key)
            return self._entries[key]
        return None

    def put(self, key, value) -> None:
        self._entries[key] = value
        self._entries.move_to_end(key)
        while len(self._entries) > self.max_categories:
            self._entries.popitem(last=False)


class Evaluator:
    """Runs a method over the pairs of a list of episodes."""

    def __init__(
        self,
        method: CapeMethod,
        root: DatasetRoot,
        annotations: AnnotationSet,
        episodes: list[Episode],
        *,
        batch_size: int = 64,
        device: str | torch.device = "cpu",
        num_workers: int = 0,
        progress=None,
        query_cache: QueryCache | None = None,
        compile: bool = False,
    ) -> None:
        self.method = method.eval().to(device)
        # torch.compile the two batched stages of the fast path (shapes vary with K: dynamic).
        self._encode_query = torch.compile(method.encode_query, dynamic=True) if compile else method.encode_query
        self._decode = torch.compile(method.decode, dynamic=True) if compile else method.decode
        self.root = root
        self.annotations = annotations
        self.episodes = episodes
        self.pairs = enumerate_pairs(episodes)
        self.batch_size = batch_size
        self.device = torch.device(device)
        self.num_workers = num_workers
        self.progress = progress
        self.query_cache = query_cache or QueryCache()

    # ------------------------------------------------------------------ public
    def run(self, prompts: Prompts, fast: bool = True) -> Predictions:
        if len(prompts.class_names) != len(self.pairs):
            raise ValueError(f"{len(prompts.class_names)} class names for {len(self.pairs)} pairs")
        predicted = np.full((len(self.pairs), self._max_keypoints(), 2), np.nan)
        with torch.inference_mode(), self._autocast():
            if fast:
                self._run_fast(prompts, predicted)
            else:
                self._run_naive(prompts, predicted)
        return self._assemble(predicted)

    # ------------------------------------------------------------ fast path
    def _run_fast(self, prompts: Prompts, predicted: np.ndarray) -> None:
        by_category: OrderedDict[int, list[int]] = OrderedDict()
        for pair_index, (episode_index, _) in enumerate(self.pairs):
            by_category.setdefault(self.episodes[episode_index].category_id, []).append(pair_index)
        for category_id, pair_indices in by_category.items():
            self._run_category(self.annotations.categories[category_id], pair_indices, prompts, predicted)

    def _run_category(self, category: Category, pair_indices: list[int], prompts: Prompts, predicted: np.ndarray) -> None:
        method = self.method
        num_slots = category.num_keypoints if method.pads_keypoints_dynamically else MAX_KEYPOINTS
        query_list = sorted({self.pairs[p][1] for p in pair_indices})
        support_list = sorted({self.episodes[self.pairs[p][0]].supports for p in pair_indices})
        query_row = {index: row for row, index in enumerate(query_list)}
        support_row = {shots: row for row, shots in enumerate(support_list)}
        support_instances = sorted({i for shots in support_list for i in shots})
        wants_support_image = "image" in method.support_kinds
        crops = self._crops(query_list, with_images=method.uses_query_image)
        support_crops = self._crops(support_instances, with_images=wants_support_image)
        texts = prompts.keypoint_texts.get(category.id, [])

        if not method.separable:
            self._decode_joint(category, pair_indices, crops, support_crops, texts, num_slots, prompts, predicted)
            return
        cache_key = (self.annotations.sha256, category.id, tuple(query_list), method.input_size, id(method))
        query_encoded = self.query_cache.get(cache_key)
        if query_encoded is None:
            query_encoded = Encoded.cat(
                [self._encode_query(self._query_batch([crops[i] for i in chunk], category)) for chunk in _chunks(query_list, self.batch_size)]
            )
            self.query_cache.put(cache_key, query_encoded)
        support_encoded = Encoded.cat(
            [
                method.encode_support(self._support_batch(chunk, support_crops, category, texts, num_slots, wants_support_image))
                for chunk in _chunks(support_list, self.batch_size)
            ]
        ).padded(num_slots)

        # Pairs whose decode inputs are identical (same query, byte-identical support encoding,
        # same mask and class name) are decoded once: for a text-support method every support of a
        # category encodes to the same text embeddings, so only its distinct visibility masks remain.
        support_fingerprints = _row_fingerprints(support_encoded)
        groups: OrderedDict[tuple, list[int]] = OrderedDict()
        for p in pair_indices:
            shots = self.episodes[self.pairs[p][0]].supports
            visible = np.logical_and.reduce([support_crops[i].visible for i in shots])
            key = (query_row[self.pairs[p][1]], support_fingerprints[support_row[shots]], visible.tobytes(), prompts.class_names[p])
            groups.setdefault(key, []).append(p)
        for chunk in _chunks(list(groups.values()), self.batch_size):
            first = [members[0] for members in chunk]
            shots = [self.episodes[self.pairs[p][0]].supports for p in first]
            pair_batch = self._pair_batch(shots, support_crops, category, [prompts.class_names[p] for p in first], num_slots)
            rows_q = torch.tensor([query_row[self.pairs[p][1]] for p in first])
            rows_s = torch.tensor([support_row[s] for s in shots])
            output = self._decode(query_encoded.select(rows_q), support_encoded.select(rows_s), pair_batch)
            covered = [p for members in chunk for p in members]
            rows = torch.tensor([row for row, members in enumerate(chunk) for _ in members], device=output.device)
            self._store(covered, output.index_select(0, rows), crops, category, predicted)
            if self.progress is not None:
                self.progress.update(len(covered))

    def _decode_joint(self, category, pair_indices, crops, support_crops, texts, num_slots, prompts, predicted) -> None:
        """A method that cannot separate its stages: whole pairs through `predict`, many per batch."""
        wants_support_image = "image" in self.method.support_kinds
        for chunk in _chunks(pair_indices, self.batch_size):
            shots = [self.episodes[self.pairs[p][0]].supports for p in chunk]
            batch = CapeBatch(
                self._query_batch([crops[self.pairs[p][1]] for p in chunk], category),
                self._support_batch(shots, support_crops, category, texts, num_slots, wants_support_image),
                self._pair_batch(shots, support_crops, category, [prompts.class_names[p] for p in chunk], num_slots),
            )
            self._store(chunk, self.method.predict(batch), crops, category, predicted)
            if self.progress is not None:
                self.progress.update(len(chunk))

    # ----------------------------------------------------------- naive path
    def _run_naive(self, prompts: Prompts, predicted: np.ndarray) -> None:
        """Every pair alone, re-cropped and re-encoded, 100 slots: the reference the fast path must equal."""
        method = self.method
        wants_support_image = "image" in method.support_kinds
        for pair_index, (episode_index, query_index) in enumerate(self.pairs):
            episode = self.episodes[episode_index]
            category = self.annotations.categories[episode.category_id]
            crops = self._crops([query_index], with_images=method.uses_query_image)
            support_crops = self._crops(list(episode.supports), with_images=wants_support_image)
            texts = prompts.keypoint_texts.get(category.id, [])
            batch = CapeBatch(
                self._query_batch([crops[query_index]], category),
                self._support_batch([episode.supports], support_crops, category, texts, MAX_KEYPOINTS, wants_support_image),
                self._pair_batch([episode.supports], support_crops, category, [prompts.class_names[pair_index]], MAX_KEYPOINTS),
            )
            self._store([pair_index], method.predict(batch), crops, category, predicted)
            if self.progress is not None:
                self.progress.update(1)

    # ------------------------------------------------------------- helpers
    def _crops(self, indices: list[int], with_images: bool) -> dict[int, Crop]:
        image_root = self.root.image_root if with_images else None
        if not with_images or self.num_workers == 0:
            instances = self.annotations.instances
            return {i: crop_instance(instances[i], None if image_root is None else image_root / instances[i].file_name, self.method.input_size) for i in indices}
        loader = DataLoader(
            CropDataset(self.annotations.instances, indices, image_root, self.method.input_size),
            batch_size=16,
            num_workers=self.num_workers,
            collate_fn=keep_crops,
            pin_memory=self.device.type == "cuda",
        )
        return {crop.index: crop for batch in loader for crop in batch}

    def _query_batch(self, crops: list[Crop], category: Category) -> QueryBatch:
        images = None
        if self.method.uses_query_image:
            images = torch.stack([crop.image for crop in crops]).to(self.device, non_blocking=True)
        return QueryBatch(images, [category.id] * len(crops))

    def _support_batch(self, shots_list, crops: dict[int, Crop], category: Category, texts: list[str], num_slots: int, with_images: bool) -> SupportBatch:
        count, num_shots, k = len(shots_list), len(shots_list[0]), category.num_keypoints
        keypoints = torch.zeros(count, num_shots, num_slots, 2)
        visible = torch.zeros(count, num_shots, num_slots, dtype=torch.bool)
        for b, shots in enumerate(shots_list):
            for s, index in enumerate(shots):
                keypoints[b, s, :k] = torch.from_numpy(crops[index].keypoints)
                visible[b, s, :k] = torch.from_numpy(crops[index].visible)
        images = None
        if with_images:
            images = torch.stack([torch.stack([crops[i].image for i in shots]) for shots in shots_list]).to(self.device, non_blocking=True)
        return SupportBatch(
            images=images,
            keypoints=keypoints.to(self.device),
            visible=visible.to(self.device),
            keypoint_texts=[texts] * count,
            skeletons=[list(category.skeleton)] * count,
            category_ids=[category.id] * count,
        )

    def _pair_batch(self, shots_list, crops: dict[int, Crop], category: Category, class_names: list[str], num_slots: int) -> PairBatch:
        mask = torch.zeros(len(shots_list), num_slots, dtype=torch.bool)
        k = category.num_keypoints
        for b, shots in enumerate(shots_list):
            mask[b, :k] = torch.from_numpy(np.logical_and.reduce([crops[i].visible for i in shots]))
        return PairBatch(mask.to(self.device), [list(category.skeleton)] * len(shots_list), class_names)

    def _store(self, pair_indices: list[int], output: torch.Tensor, crops: dict[int, Crop], category: Category, predicted: np.ndarray) -> None:
        k = category.num_keypoints
        normalised = output[:, :k].float().cpu().numpy().astype(np.float64)
        for row, pair_index in enumerate(pair_indices):
            crop = crops[self.pairs[pair_index][1]]
            pixels = normalised[row] * self.method.input_size
            predicted[pair_index, :k] = apply_affine(pixels, invert_affine(crop.matrix))

    def _max_keypoints(self) -> int:
        return max(self.annotations.categories[e.category_id].num_keypoints for e in self.episodes)

    def _autocast(self):
        if self.device.type == "cuda":
            return torch.autocast("cuda", dtype=torch.bfloat16)
        return contextlib.nullcontext()

    def _assemble(self, predicted: np.ndarray) -> Predictions:
        instances = self.annotations.instances
        n, width = predicted.shape[:2]
        ground_truth = np.full((n, width, 2), np.nan)
        mask = np.zeros((n, width), dtype=bool)
        normalizer = np.zeros(n)
        for pair_index, (episode_index, query_index) in enumerate(self.pairs):
            episode = self.episodes[episode_index]
            query = instances[query_index]
            k = len(query.visible)
            ground_truth[pair_index, :k] = query.keypoints
            # Scored keypoints: visible in the query AND in every support (PROTOCOLS.md 2.4).
            mask[pair_index, :k] = np.logical_and.reduce([query.visible] + [instances[i].visible for i in episode.supports])
            normalizer[pair_index] = query.bbox_size
        return Predictions(
            keypoints=predicted,
            ground_truth=ground_truth,
            mask=mask,
            normalizer=normalizer,
            category_ids=np.array([self.episodes[e].category_id for e, _ in self.pairs]),
            episode_ids=np.array([e for e, _ in self.pairs]),
            query_ids=np.array([instances[q].annotation_id for _, q in self.pairs]),
            support_ids=np.array([instances[self.episodes[e].supports[0]].annotation_id for e, _ in self.pairs]),
        )


def _row_fingerprints(encoded: Encoded) -> list[bytes]:
    """A digest per batch row of every tensor in `encoded`: equal digests mean equal rows."""
    tensors = [encoded.per_item[k] for k in sorted(encoded.per_item)] + [encoded.per_keypoint[k] for k in sorted(encoded.per_keypoint)]
    arrays = [t.detach().float().cpu().reshape(t.shape[0], -1).numpy() for t in tensors]
    rows = len(arrays[0]) if arrays else 0
    return [hashlib.blake2b(b"".join(a[r].tobytes() for a in arrays), digest_size=16).digest() for r in range(rows)]


def _chunks(items: list, size: int):
    for start in range(0, len(items), size):
        yield items[start : start + size]
