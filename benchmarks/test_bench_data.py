"""Data-path throughput on the demo data: episode construction and top-down crops.

Run: python -m pytest benchmarks/test_bench_data.py --benchmark-only
"""
import pytest

from cape_bench.data.crops import crop_instance
from cape_bench.data.episodes import EpisodeSampler
from cape_bench.data.layout import DatasetRoot


@pytest.fixture(scope="module")
def split1(demo_root):
    root = DatasetRoot(demo_root, is_demo=True)
    return root, root.load(1, "test")


def test_episode_construction(benchmark, split1):
    _, annotations = split1
    episodes = benchmark(EpisodeSampler().sample, annotations)
    benchmark.extra_info["pairs"] = sum(len(e.queries) for e in episodes)
    benchmark.extra_info["pairs_per_s"] = benchmark.extra_info["pairs"] / benchmark.stats.stats.mean


@pytest.mark.parametrize("with_image", [True, False], ids=["decode+warp", "geometry-only"])
def test_crop_throughput(benchmark, split1, with_image):
    root, annotations = split1
    instances = annotations.instances[:64]

    def crop_all():
        for instance in instances:
            crop_instance(instance, root.image_path(instance) if with_image else None, 256)

    benchmark(crop_all)
    benchmark.extra_info["images_per_s"] = len(instances) / benchmark.stats.stats.mean
