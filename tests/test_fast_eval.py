"""The fast evaluation path must give the naive path's numbers, for every registered method."""
import numpy as np
import pytest

from cape_bench.build import build_method, list_configs
from cape_bench.data.episodes import EpisodeSampler
from cape_bench.data.keypoint_texts import KeypointTexts
from cape_bench.data.layout import DatasetRoot
from cape_bench.engine.evaluate import Evaluator, Prompts
from cape_bench.registry import METHODS
from tests import weights


def _smallest_config(name: str) -> str:
    configs = list_configs(name)
    return "tiny" if "tiny" in configs else configs[0]


@pytest.fixture(scope="module")
def demo_split(demo_root):
    root = DatasetRoot(demo_root, is_demo=True)
    annotations = root.load(1, "test")
    # Three categories, 2 episodes x 4 queries each: batches of several pairs and a remainder,
    # while the naive path (batch 1, 100 slots) stays affordable on a CPU.
    kept = list(annotations.categories)[:3]
    episodes = [e for e in EpisodeSampler(episodes_per_category=2, queries_per_episode=4).sample(annotations) if e.category_id in kept]
    texts = KeypointTexts.for_dataset(None, root.keypoint_texts_file)
    categories = annotations.categories
    prompts_texts = {c: texts.texts(categories[c]) for c in {e.category_id for e in episodes}}
    return root, annotations, episodes, prompts_texts


@pytest.mark.parametrize("name", METHODS.names())
def test_fast_path_equals_naive_path(name, demo_split):
    root, annotations, episodes, keypoint_texts = demo_split
    method, _ = build_method(name, _smallest_config(name), demo=True)
    weights.perturb(method)
    evaluator = Evaluator(method, root, annotations, episodes, batch_size=3)
    class_names = [annotations.categories[episodes[e].category_id].class_name for e, _ in evaluator.pairs]
    prompts = Prompts(keypoint_texts, class_names)
    fast = evaluator.run(prompts, fast=True)
    naive = evaluator.run(prompts, fast=False)
    assert fast.keypoints.shape == naive.keypoints.shape
    valid = ~np.isnan(naive.keypoints)
    assert np.array_equal(valid, ~np.isnan(fast.keypoints))
    # Compare in normalised crop units (pixels / crop scale), as the issue states the tolerance.
    scale = (naive.normalizer * 1.25)[:, None, None]
    assert np.max(np.abs(fast.keypoints - naive.keypoints)[valid] / np.broadcast_to(scale, naive.keypoints.shape)[valid]) < 1e-5
    np.testing.assert_array_equal(fast.mask, naive.mask)


@pytest.mark.parametrize("name, support_key", [("capex", "mask"), ("graphcape", "instance")])
def test_fast_path_decodes_each_distinct_input_once(name, support_key, demo_split):
    """Text supports of a category encode alike, so pairs differ only by query and support mask;
    an image support differs per instance, so only repeated (support, query) pairs collapse."""
    root, annotations, _, keypoint_texts = demo_split
    kept = list(annotations.categories)[:2]
    # 40 episodes of 10 queries over 40 instances: every query is paired with many supports.
    episodes = [e for e in EpisodeSampler(episodes_per_category=40, queries_per_episode=10).sample(annotations) if e.category_id in kept]
    method, _ = build_method(name, "tiny", demo=True)
    evaluator = Evaluator(method, root, annotations, episodes, batch_size=64)
    decoded_rows = []
    decode = evaluator._decode
    evaluator._decode = lambda query, support, pairs: decoded_rows.append(len(pairs.class_names)) or decode(query, support, pairs)
    class_names = [annotations.categories[episodes[e].category_id].class_name for e, _ in evaluator.pairs]
    evaluator.run(Prompts(keypoint_texts, class_names), fast=True)
    instances = annotations.instances
    key = {"mask": lambda s: instances[s].visible.tobytes(), "instance": lambda s: s}[support_key]
    distinct = {(query, key(episodes[e].supports[0])) for e, query in evaluator.pairs}
    assert sum(decoded_rows) == len(distinct) < len(evaluator.pairs)
