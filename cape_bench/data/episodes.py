"""Seeded episodes: which support and query instances each category is tested on.

The `mp100` mode reproduces the upstream pair list exactly (PROTOCOLS.md 2.2):
Python's `random` seeded once, then for every category in JSON order,
`random.sample(cat2obj[c], shots + queries)` repeated per episode; the first
draws are the supports. The `per-category` mode seeds each category on its
own, so adding or removing one category leaves the others' episodes unchanged.
"""
from __future__ import annotations

import hashlib
import random
from dataclasses import dataclass

from cape_bench.data.records import AnnotationSet
from cape_bench.errors import ConfigError, DatasetError

EPISODE_MODES = ("mp100", "per-category")


@dataclass(frozen=True)
class Episode:
    """One category, its support instance(s) and its query instances (database indices)."""

    category_id: int
    supports: tuple[int, ...]
    queries: tuple[int, ...]


@dataclass(frozen=True)
class EpisodeSampler:
    """The 1-shot (or k-shot) test protocol: 200 episodes x 15 queries per category by default."""

    episodes_per_category: int = 200
    queries_per_episode: int = 15
    shots: int = 1
    seed: int = 1
    mode: str = "mp100"

    def __post_init__(self) -> None:
        if self.mode not in EPISODE_MODES:
            raise ConfigError(f"episode mode must be one of {EPISODE_MODES}, got {self.mode!r}")
        for name in ("episodes_per_category", "queries_per_episode", "shots"):
            if getattr(self, name) < 1:
                raise ConfigError(f"{name} must be >= 1, got {getattr(self, name)}")

    def sample(self, annotations: AnnotationSet) -> list[Episode]:
        """Episodes for every category of the file, in JSON category order."""
        draw = self.shots + self.queries_per_episode
        rng = random.Random(self.seed)
        episodes = []
        for category_id in annotations.categories:
            pool = annotations.instances_of(category_id)
            if len(pool) < draw:
                category = annotations.categories[category_id]
                raise DatasetError(
                    f"{annotations.path}: category {category_id} ({category.name}) has {len(pool)} usable instances "
                    f"({annotations.filtered.total} filtered in the file), but an episode needs {draw} distinct ones"
                )
            if self.mode == "per-category":
                rng = random.Random(f"{self.seed}:{category_id}")
            for _ in range(self.episodes_per_category):
                chosen = rng.sample(pool, draw)
                episodes.append(Episode(category_id, tuple(chosen[: self.shots]), tuple(chosen[self.shots :])))
        return episodes

    def describe(self) -> dict:
        return {
            "mode": self.mode,
            "seed": self.seed,
            "episodes_per_category": self.episodes_per_category,
            "queries_per_episode": self.queries_per_episode,
            "shots": self.shots,
        }


def episodes_hash(episodes: list[Episode], annotations: AnnotationSet) -> str:
    """sha256 of the pair list in annotation ids, so two runs can prove they saw the same work."""
    digest = hashlib.sha256()
    ids = annotations.instances
    for episode in episodes:
        supports = ",".join(str(ids[i].annotation_id) for i in episode.supports)
        queries = ",".join(str(ids[i].annotation_id) for i in episode.queries)
        digest.update(f"{episode.category_id}|{supports}|{queries}\n".encode())
    return digest.hexdigest()
