"""Training: pair sampling, augmentation geometry, collation, the loop, resume, demo checkpoints, DDP."""
from __future__ import annotations

import json
import os
import socket
from collections import Counter
from pathlib import Path

import cv2
import numpy as np
import pytest
import torch
from torch import nn

from cape_bench.checkpoints import load_checkpoint
from cape_bench.data.crops import instance_crop_matrix
from cape_bench.data.keypoint_texts import KeypointTexts
from cape_bench.data.layout import DatasetRoot
from cape_bench.data.train_pairs import (
    NO_AUGMENTATION,
    Augmentation,
    TrainPairDataset,
    collate_pairs,
    draw_pairs,
)
from cape_bench.data.transforms import IMAGENET_MEAN, IMAGENET_STD
from cape_bench.engine import demo_checkpoints
from cape_bench.engine.demo_checkpoints import ensure_demo_checkpoint
from cape_bench.engine.train import TrainSettings, train, train_command
from cape_bench.errors import ConfigError
from cape_bench.method import CapeMethod, Encoded
from cape_bench.registry import METHODS

TEST_METHOD = "test-linear-pose"


class LinearPose(CapeMethod):
    """A trainable toy: support keypoints x a learned gain, plus a linear map of the query's mean colour."""

    support_kinds = frozenset({"keypoints"})

    def __init__(self, config=None):
        super().__init__(config)
        self.colour = nn.Linear(3, 2)
        nn.init.zeros_(self.colour.weight)
        nn.init.zeros_(self.colour.bias)
        self.gain = nn.Parameter(torch.zeros(1))
        self.dropout = nn.Dropout(0.1)  # exercises the torch RNG on resume

    def encode_query(self, query):
        return Encoded(per_item={"colour": query.images.mean((2, 3))})

    def encode_support(self, support):
        return Encoded(per_keypoint={"keypoints": support.keypoints[:, 0]})

    def decode(self, query, support, pairs):
        offset = self.colour(self.dropout(query.per_item["colour"]))
        return support.per_keypoint["keypoints"] * self.gain + offset[:, None, :]

    def loss(self, batch):
        weight = (batch.target_visible & batch.pairs.keypoint_mask).float()
        error = (self.predict(batch) - batch.target_keypoints).abs().sum(-1)
        return {"loss_l1": (error * weight).sum() / weight.sum().clamp(min=1)}


def _register() -> None:
    METHODS.names()  # discover the packaged methods first
    if TEST_METHOD not in METHODS._entries:
        METHODS.register(TEST_METHOD, "tests.test_train:LinearPose")


@pytest.fixture
def test_method():
    _register()
    yield TEST_METHOD
    METHODS._entries.pop(TEST_METHOD, None)


def _config(**train_settings) -> dict:
    settings = dict(lr=0.05, warmup_iters=0, batch_size=8, num_workers=0, log_interval=1, val_episodes=1, val_interval=0)
    settings.update(train_settings)
    return {"input_size": 48, "train": settings}


@pytest.fixture(scope="module")
def quirky(quirky_root) -> DatasetRoot:
    return DatasetRoot(quirky_root)


@pytest.fixture(scope="module")
def demo(demo_root) -> DatasetRoot:
    return DatasetRoot(Path(demo_root), is_demo=True)


def _texts(root: DatasetRoot) -> KeypointTexts:
    return KeypointTexts.for_dataset(None, root.keypoint_texts_file)


# ----------------------------------------------------------------------------- pairs


def test_pairs_are_category_balanced_and_distinct(demo):
    dataset = TrainPairDataset(demo, 1, 32, _texts(demo), seed=3)
    annotations = dataset.annotations
    largest = max(len(annotations.instances_of(c)) for c in annotations.categories)
    per_category = Counter(annotations.instances[int(q)].category_id for _, q in dataset.pairs)
    assert set(per_category) == set(annotations.categories)
    assert set(per_category.values()) == {largest}
    assert len(dataset) == largest * len(annotations.categories)
    support, query = dataset.pairs[:, 0], dataset.pairs[:, 1]
    assert np.all(support != query)
    assert all(annotations.instances[int(s)].category_id == annotations.instances[int(q)].category_id for s, q in dataset.pairs)
    # Shuffled: the first pairs do not all come from the first category.
    assert len({annotations.instances[int(q)].category_id for q in query[:20]}) > 1


def test_pairs_are_deterministic_per_seed_and_epoch_and_redrawn_each_epoch(quirky):
    a = TrainPairDataset(quirky, 1, 32, _texts(quirky), seed=5)
    b = TrainPairDataset(quirky, 1, 32, _texts(quirky), seed=5)
    a.set_epoch(3)
    b.set_epoch(3)
    np.testing.assert_array_equal(a.pairs, b.pairs)
    epoch3 = a.pairs.copy()
    a.set_epoch(4)
    assert not np.array_equal(a.pairs, epoch3)
    a.set_epoch(3)
    np.testing.assert_array_equal(a.pairs, epoch3)
    other_seed = TrainPairDataset(quirky, 1, 32, _texts(quirky), seed=6)
    other_seed.set_epoch(3)
    assert not np.array_equal(other_seed.pairs, epoch3)
    # The augmented sample is a function of (seed, epoch, index) only.
    np.testing.assert_array_equal(a[7].query.keypoints, b[7].query.keypoints)
    np.testing.assert_array_equal(a[7].query.matrix, b[7].query.matrix)


def test_too_few_instances_for_a_pair_is_a_dataset_error():
    from cape_bench.errors import DatasetError

    with pytest.raises(DatasetError, match="category 7 has 1 usable"):
        draw_pairs({3: [0, 1, 2], 7: [5]}, seed=0, epoch=0)


def test_augmentation_follows_the_mmpose_distribution():
    augmentation = Augmentation()
    draws = np.array([augmentation.draw(np.random.default_rng([0, i])) for i in range(4000)])
    rotation, scale = draws[:, 0], draws[:, 1]
    assert scale.min() >= 0.85 and scale.max() <= 1.15 and scale.std() > 0.08
    assert np.abs(rotation).max() <= 30.0
    assert 0.55 < np.mean(rotation != 0) < 0.65
    assert NO_AUGMENTATION.draw(np.random.default_rng(0)) == (0.0, 1.0)


# ------------------------------------------------------------- augmentation geometry

DOT_COLOURS = ((255, 0, 0), (0, 255, 0), (0, 0, 255))


def _write_dot_dataset(root: Path, num_keypoints: int = 3, instances: int = 4) -> DatasetRoot:
    """One category whose keypoints are drawn as red/green/blue dots on black images."""
    (root / "annotations").mkdir(parents=True)
    (root / "images").mkdir()
    rng = np.random.default_rng(0)
    images, annotations = [], []
    for i in range(instances):
        width, height = 200, 160
        points = rng.uniform([60, 50], [140, 110], size=(num_keypoints, 2)).round()
        canvas = np.zeros((height, width, 3), np.uint8)
        for point, colour in zip(points, DOT_COLOURS):
            cv2.circle(canvas, (int(point[0]), int(point[1])), 3, colour, -1)
        cv2.imwrite(str(root / "images" / f"{i}.png"), cv2.cvtColor(canvas, cv2.COLOR_RGB2BGR))
        images.append({"id": i, "file_name": f"{i}.png", "width": width, "height": height})
        x0, y0 = points.min(0) - 10
        x1, y1 = points.max(0) + 10
        keypoints = [v for x, y in points for v in (float(x), float(y), 2)]
        annotations.append({"id": i, "image_id": i, "category_id": 1, "bbox": [x0, y0, x1 - x0, y1 - y0], "area": 100.0,
                            "keypoints": keypoints, "num_keypoints": num_keypoints, "iscrowd": 0})
    category = {"id": 1, "name": "dots", "supercategory": "none", "keypoints": [f"dot {k}" for k in range(num_keypoints)], "skeleton": []}
    payload = {"images": images, "annotations": annotations, "categories": [category]}
    (root / "annotations" / "mp100_split1_train.json").write_text(json.dumps(payload))
    return DatasetRoot(root)


def _unnormalise(image: torch.Tensor) -> np.ndarray:
    return (image.numpy().transpose(1, 2, 0) * IMAGENET_STD + IMAGENET_MEAN) * 255


def test_augmented_keypoints_stay_on_the_drawn_dots(tmp_path):
    root = _write_dot_dataset(tmp_path / "dots")
    dataset = TrainPairDataset(root, 1, 128, None, seed=0, support_kinds={"image"})
    rotated = 0
    for epoch in range(3):
        dataset.set_epoch(epoch)
        for index in range(len(dataset)):
            sample = dataset[index]
            for crop in (*sample.supports, sample.query):
                instance = dataset.annotations.instances[crop.index]
                rotated += not np.allclose(crop.matrix, instance_crop_matrix(instance, 128))
                pixels = _unnormalise(crop.image)
                for channel in range(3):
                    others = [c for c in range(3) if c != channel]
                    blob = (pixels[..., channel] > 128) & (pixels[..., others].max(-1) < 100)
                    ys, xs = np.nonzero(blob)
                    assert len(xs) > 0, "dot left the crop"
                    centre = np.array([xs.mean(), ys.mean()])
                    np.testing.assert_allclose(crop.keypoints[channel] * 128, centre, atol=1.0)
    assert rotated > 10  # the augmentation did move the crops


def test_more_than_100_keypoints_is_a_config_error(tmp_path):
    root = _write_dot_dataset(tmp_path / "dots", num_keypoints=101)
    with pytest.raises(ConfigError, match="101 keypoints"):
        TrainPairDataset(root, 1, 32, None, seed=0)


# ---------------------------------------------------------------------- collation


def test_collate_pads_to_the_largest_category_and_masks_the_padding(quirky):
    dataset = TrainPairDataset(quirky, 1, 32, _texts(quirky), seed=0, support_kinds={"keypoints", "text"})
    categories = dataset.annotations.categories
    by_category = {}
    for index, (_, query) in enumerate(dataset.pairs):
        by_category.setdefault(dataset.annotations.instances[int(query)].category_id, index)
    samples = [dataset[i] for i in by_category.values()]
    batch = dataset.collate(samples)
    counts = [categories[s.category_id].num_keypoints for s in samples]
    width = max(counts)
    assert batch.support.images is None and batch.query.images.shape == (len(samples), 3, 32, 32)
    assert batch.support.keypoints.shape == (len(samples), 1, width, 2)
    assert batch.target_keypoints.shape == (len(samples), width, 2)
    for b, (sample, k) in enumerate(zip(samples, counts)):
        assert not batch.support.visible[b, :, k:].any() and not batch.target_visible[b, k:].any()
        assert not batch.pairs.keypoint_mask[b, k:].any()
        assert torch.equal(batch.pairs.keypoint_mask[b, :k], torch.from_numpy(sample.supports[0].visible))
        assert torch.equal(batch.target_visible[b, :k], torch.from_numpy(sample.query.visible))
        assert torch.allclose(batch.target_keypoints[b, :k], torch.from_numpy(sample.query.keypoints))
        assert (batch.target_keypoints[b, k:] == 0).all()
        assert len(batch.support.keypoint_texts[b]) == k
        assert batch.pairs.class_names[b] == categories[sample.category_id].class_name
        assert batch.support.skeletons[b] == list(categories[sample.category_id].skeleton)
    padded = collate_pairs(samples, categories, dataset.keypoint_texts, pad_to=100)
    assert padded.target_keypoints.shape[1] == 100 and not padded.pairs.keypoint_mask[:, width:].any()
    with_images = TrainPairDataset(quirky, 1, 32, None, seed=0, support_kinds={"image"})
    assert with_images.collate([with_images[0], with_images[1]]).support.images.shape == (2, 1, 3, 32, 32)


# --------------------------------------------------------------------------- loop


def test_training_lowers_the_loss_and_writes_reloadable_checkpoints(test_method, demo, tmp_path):
    result = train(test_method, _config(), None, demo, 1, tmp_path / "run", seed=0, max_iters=30, log=None)
    losses = [r["loss"] for r in result.history if "loss" in r]
    assert len(losses) == 30
    assert np.mean(losses[-5:]) < 0.7 * np.mean(losses[:5])
    assert result.best_checkpoint == tmp_path / "run" / "best.safetensors" and result.last_checkpoint.is_file()
    metadata = json.loads(result.best_checkpoint.with_suffix(".json").read_text())
    assert metadata["seed"] == 0 and metadata["iteration"] == 30 and metadata["epoch"] == 1
    assert 0.0 <= metadata["val_pck"] <= 1.0 and metadata["config"]["train"]["lr"] == 0.05
    fresh = LinearPose(_config())
    load_checkpoint(fresh, result.last_checkpoint)
    for name, tensor in result.method.state_dict().items():
        assert torch.equal(fresh.state_dict()[name], tensor.cpu())


def test_resume_continues_the_iteration_count_and_the_trajectory(test_method, quirky, tmp_path):
    config = _config(batch_size=16, val_episodes=0)  # 105 pairs: 7 iterations per epoch
    straight = train(test_method, config, None, quirky, 1, tmp_path / "straight", seed=2, max_iters=12, log=None)
    train(test_method, config, None, quirky, 1, tmp_path / "split", seed=2, max_iters=5, log=None)
    resumed = train(test_method, config, None, quirky, 1, tmp_path / "split", seed=2, max_iters=12, resume=True, log=None)
    assert [r["iteration"] for r in resumed.history] == list(range(1, 13))
    for name, tensor in straight.method.state_dict().items():
        assert torch.equal(resumed.method.state_dict()[name], tensor), name
    assert straight.best_checkpoint is None  # validation disabled
    with pytest.raises(ConfigError, match="different config"):
        train(test_method, _config(batch_size=16, val_episodes=0, lr=0.1), None, quirky, 1, tmp_path / "split", seed=2, max_iters=14, resume=True, log=None)


def test_learning_rate_warms_up_then_steps_down(test_method, quirky, tmp_path):
    config = _config(batch_size=56, lr=1.0, warmup_iters=3, warmup_ratio=0.1, milestones=[1], gamma=0.1, val_episodes=0)
    result = train(test_method, config, None, quirky, 1, tmp_path / "lr", seed=0, max_epochs=2, log=None)
    lrs = [r["lr"] for r in result.history]
    assert len(lrs) == 4  # 105 pairs / 56 = 2 iterations per epoch
    assert lrs[0] == pytest.approx(0.1) and lrs[1] > lrs[0]
    assert lrs[-1] == pytest.approx(0.1)  # x0.1 after epoch 1, warm-up over


def test_bad_settings_and_untrainable_methods_are_config_errors(test_method, quirky, tmp_path):
    with pytest.raises(ConfigError, match="train has no setting"):
        TrainSettings.from_config({"learning_rate": 1e-3})
    with pytest.raises(ConfigError, match="not trainable"):
        train("support-copy", None, None, quirky, 1, tmp_path / "copy", log=None)


def test_train_command_trains_each_split_into_the_work_dir(test_method, quirky, tmp_path, capsys):
    config_file = tmp_path / "linear.py"
    config_file.write_text("input_size = 48\ntrain = dict(lr=0.05, warmup_iters=0, batch_size=8, num_workers=0, val_episodes=1)\n")
    code = train_command(method=test_method, split=[1], config=str(config_file), cfg_options=["train.log_interval=1"],
                         data=str(quirky.root), work_dir=tmp_path / "wd", seed=0, max_iters=2)
    assert code == 0
    assert (tmp_path / "wd" / "split1" / "best.safetensors").is_file()
    assert "--checkpoint" in capsys.readouterr().out


# ------------------------------------------------------------------ demo checkpoints

TINY_BUDGET = dict(max_iters=3, batch_size=4, lr=1e-2, warmup_iters=0, milestones=[], val_interval=0, val_episodes=1, log_interval=1, num_workers=0)


def test_demo_checkpoint_is_trained_once_then_reused(test_method, demo, tmp_path, monkeypatch):
    monkeypatch.setenv("CAPE_BENCH_CACHE", str(tmp_path / "cache"))
    import cape_bench.engine.train as train_module

    calls = []
    real_train = train_module.train
    monkeypatch.setattr(train_module, "train", lambda *a, **k: calls.append(1) or real_train(*a, **k))
    config = {**_config(), "method": test_method, "config_name": "tiny"}
    first = ensure_demo_checkpoint(test_method, "tiny", config, demo, 2, seed=0, log=None, budget=TINY_BUDGET)
    assert first.is_file() and first.parent.name == "split2"
    assert first.parent.parent.parent == tmp_path / "cache" / "demo-checkpoints"
    assert first.parent.parent.name.startswith(f"{test_method}-tiny-") and len(first.parent.parent.name.rsplit("-", 1)[1]) == 8
    assert sorted(p.name for p in first.parent.iterdir()) == ["best.json", "best.safetensors", "history.json"]
    assert json.loads(first.with_suffix(".json").read_text())["config"]["train"]["max_iters"] == 3
    mtime = first.stat().st_mtime_ns
    again = ensure_demo_checkpoint(test_method, "tiny", config, demo, 2, seed=0, log=None, budget=TINY_BUDGET)
    assert again == first and again.stat().st_mtime_ns == mtime and len(calls) == 1
    other = demo_checkpoints.demo_checkpoint_dir(test_method, "tiny", config, demo, 2, seed=1, budget=TINY_BUDGET)
    assert other != first.parent
    assert not list((tmp_path / "cache" / "demo-checkpoints").glob(f"{first.parent.parent.name}/.*"))  # no scratch left


def test_a_config_changes_its_demo_budget_as_data(test_method, demo):
    config = {**_config(), "method": test_method}
    longer = {**config, "demo_budget": {"max_iters": 5, "milestones": [1]}}
    assert demo_checkpoints.demo_budget(config) == demo_checkpoints.DEMO_BUDGET
    assert demo_checkpoints.demo_budget(longer) == {**demo_checkpoints.DEMO_BUDGET, "max_iters": 5, "milestones": [1]}
    assert (demo_checkpoints.demo_checkpoint_dir(test_method, "tiny", longer, demo, 2)
            != demo_checkpoints.demo_checkpoint_dir(test_method, "tiny", config, demo, 2))
    with pytest.raises(ConfigError, match="demo_budget has no setting max_iter;"):
        demo_checkpoints.demo_budget({**config, "demo_budget": {"max_iter": 5}})


def test_demo_checkpoints_refuse_real_data(test_method, quirky):
    with pytest.raises(ConfigError, match="demo dataset only"):
        ensure_demo_checkpoint(test_method, "tiny", _config(), quirky, 1, log=None, budget=TINY_BUDGET)


# --------------------------------------------------------------------------- DDP


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _ddp_worker(rank: int, world_size: int, port: int, root: str, out: str) -> None:
    os.environ.update({"MASTER_ADDR": "127.0.0.1", "MASTER_PORT": str(port), "RANK": str(rank), "WORLD_SIZE": str(world_size), "LOCAL_RANK": str(rank)})
    torch.set_num_threads(1)
    _register()
    result = train(TEST_METHOD, _config(batch_size=8), None, DatasetRoot(Path(root)), 1, Path(out) / "run", seed=0, max_iters=4, log=None)
    torch.save({"state": result.method.state_dict(), "history": result.history}, Path(out) / f"rank{rank}.pt")


def test_two_process_ddp_on_cpu_ends_with_identical_weights(quirky, tmp_path):
    import torch.multiprocessing as mp

    mp.spawn(_ddp_worker, args=(2, _free_port(), str(quirky.root), str(tmp_path)), nprocs=2, join=True)
    rank0, rank1 = (torch.load(tmp_path / f"rank{r}.pt", weights_only=False) for r in (0, 1))
    for name, tensor in rank0["state"].items():
        assert torch.equal(tensor, rank1["state"][name]), name
    assert not torch.equal(rank0["state"]["gain"], torch.zeros(1))  # it trained
    losses0 = [r["loss"] for r in rank0["history"] if "loss" in r]
    losses1 = [r["loss"] for r in rank1["history"] if "loss" in r]
    assert losses0 != losses1  # each rank saw its own shard of the pairs
    assert [r["val_pck"] for r in rank0["history"] if "val_pck" in r] == [r["val_pck"] for r in rank1["history"] if "val_pck" in r]
    assert (tmp_path / "run" / "best.safetensors").is_file()
