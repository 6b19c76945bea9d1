"""Where an MP-100 install keeps its files, and which dataset a command uses.

Layout: `<root>/annotations/mp100_split{k}_{subset}.json`, images under
`<root>/images/` (POMNet/GraphCape/CapeX) or directly under `<root>`
(CapeFormer/CapeNext); both are accepted. The root comes from `--data`, then
the `CAPE_BENCH_DATA` variable, then the user config file; with none of them
set, commands use the built-in demo dataset and say so.
"""
from __future__ import annotations

import json
import os
from dataclasses import dataclass
from functools import lru_cache
from pathlib import Path

from cape_bench.data.records import SUBSETS, AnnotationSet, Instance, load_annotation_set
from cape_bench.errors import ConfigError, DatasetError

DATA_ENV = "CAPE_BENCH_DATA"
CONFIG_ENV = "CAPE_BENCH_CONFIG"
SPLITS = (1, 2, 3, 4, 5)


def user_config_path() -> Path:
    """`$CAPE_BENCH_CONFIG` or `~/.config/cape-bench/config.json` ({"data": "/path/to/mp100"})."""
    return Path(os.environ.get(CONFIG_ENV, Path.home() / ".config" / "cape-bench" / "config.json"))


@dataclass(frozen=True)
class DatasetRoot:
    """An MP-100-format dataset on disk."""

    root: Path
    is_demo: bool = False

    @property
    def label(self) -> str:
        return "demo" if self.is_demo else "mp100"

    def annotation_path(self, split: int, subset: str) -> Path:
        if split not in SPLITS:
            raise ConfigError(f"split must be one of {SPLITS}, got {split!r}")
        if subset not in SUBSETS:
            raise ConfigError(f"subset must be one of {SUBSETS}, got {subset!r}")
        return self.root / "annotations" / f"mp100_split{split}_{subset}.json"

    @property
    def image_root(self) -> Path:
        images = self.root / "images"
        return images if images.is_dir() else self.root

    def image_path(self, instance: Instance) -> Path:
        return self.image_root / instance.file_name

    def load(self, split: int, subset: str = "test") -> AnnotationSet:
        return _load_cached(self.annotation_path(split, subset))

    @property
    def keypoint_texts_file(self) -> Path | None:
        """A dataset-local description file (the demo data ships one)."""
        path = self.root / "keypoint_texts.json"
        return path if path.is_file() else None


@lru_cache(maxsize=16)
def _load_cached(path: Path) -> AnnotationSet:
    return load_annotation_set(path)


def resolve_dataset(data: str | Path | None = None) -> DatasetRoot:
    """The dataset a command should use (see module docstring for the order)."""
    for source, value in (("--data", data), (DATA_ENV, os.environ.get(DATA_ENV)), (str(user_config_path()), _configured_root())):
        if value:
            root = Path(value).expanduser()
            if not (root / "annotations").is_dir():
                raise DatasetError(f"{root} (from {source}): no annotations/ folder; expected {root}/annotations/mp100_split1_test.json etc.")
            return DatasetRoot(root)
    from cape_bench.data.demo import ensure_demo_dataset

    return DatasetRoot(ensure_demo_dataset(), is_demo=True)


def _configured_root() -> str | None:
    path = user_config_path()
    if not path.is_file():
        return None
    try:
        return json.loads(path.read_text()).get("data")
    except (json.JSONDecodeError, AttributeError) as error:
        raise ConfigError(f"{path}: not a JSON object like {{\"data\": \"/path/to/mp100\"}} ({error})") from None
