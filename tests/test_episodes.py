import random

import pytest

from cape_bench.data.episodes import EpisodeSampler, episodes_hash
from cape_bench.data.records import load_annotation_set
from cape_bench.errors import ConfigError, DatasetError


@pytest.fixture(scope="module")
def annotations(tmp_path_factory):
    from tests.mp100_fixture import write_quirky_mp100

    root = write_quirky_mp100(tmp_path_factory.mktemp("ep"))
    return load_annotation_set(root / "annotations" / "mp100_split1_test.json")


def _upstream_pairs(annotations, episodes=200, queries=15, shots=1):
    """The upstream construction, written as PROTOCOLS.md 2.2 describes it (global `random`)."""
    cat2obj = {c: [] for c in annotations.categories}
    for instance in annotations.instances:
        cat2obj[instance.category_id].append(instance.index)
    random.seed(1)
    pairs = []
    for category_id in annotations.categories:
        for _ in range(episodes):
            drawn = random.sample(cat2obj[category_id], shots + queries)
            pairs += [(tuple(drawn[:shots]), query) for query in drawn[shots:]]
    return pairs


def test_mp100_mode_reproduces_upstream_pair_list(annotations):
    episodes = EpisodeSampler().sample(annotations)
    ours = [(e.supports, q) for e in episodes for q in e.queries]
    assert ours == _upstream_pairs(annotations)
    assert len(ours) == 5 * 200 * 15


def test_golden_first_episode(annotations):
    # Frozen once: a change here means the pair list (and every stored result) changed.
    first = EpisodeSampler().sample(annotations)[0]
    assert first.category_id == 2
    assert first.supports == (4,)
    assert first.queries == (18, 2, 8, 3, 15, 12, 7, 13, 10, 6, 16, 1, 14, 0, 9)


def test_supports_never_queries_and_category_order(annotations):
    episodes = EpisodeSampler(episodes_per_category=30, shots=3, queries_per_episode=5).sample(annotations)
    assert [e.category_id for e in episodes[::30]] == list(annotations.categories)
    for episode in episodes:
        assert not set(episode.supports) & set(episode.queries)
        assert len(set(episode.queries)) == 5 and len(episode.supports) == 3
        assert all(annotations.instances[i].category_id == episode.category_id for i in episode.supports + episode.queries)


def test_seed_determinism_and_hash(annotations):
    a = EpisodeSampler(seed=3).sample(annotations)
    b = EpisodeSampler(seed=3).sample(annotations)
    c = EpisodeSampler(seed=4).sample(annotations)
    assert a == b and a != c
    assert episodes_hash(a, annotations) == episodes_hash(b, annotations) != episodes_hash(c, annotations)


def test_per_category_mode_is_independent_of_other_categories(annotations):
    sampler = EpisodeSampler(mode="per-category", episodes_per_category=4)
    full = [e for e in sampler.sample(annotations) if e.category_id == 32]
    annotations_without_first = type(annotations)(annotations.path, annotations.sha256, {k: v for k, v in annotations.categories.items() if k != 2}, annotations.instances, annotations.filtered)
    reduced = [e for e in sampler.sample(annotations_without_first) if e.category_id == 32]
    assert full == reduced


def test_too_few_instances_is_a_clear_error(annotations):
    with pytest.raises(DatasetError, match=r"category 2 \(horse_body\) has 21 usable instances .* needs 31"):
        EpisodeSampler(queries_per_episode=30).sample(annotations)


def test_bad_settings():
    with pytest.raises(ConfigError):
        EpisodeSampler(mode="random")
    with pytest.raises(ConfigError):
        EpisodeSampler(shots=0)
