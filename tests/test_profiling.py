"""Efficiency profiling: hand-computed FLOPs (Linear + attention), parameter split, records, device errors."""
from __future__ import annotations

import json

import pytest
import torch
import torch.nn.functional as F
from torch import nn

from cape_bench import profiling
from cape_bench.cli import main
from cape_bench.errors import ConfigError
from cape_bench.method import CapeMethod, Encoded, PairBatch, QueryBatch, SupportBatch
from cape_bench.registry import METHODS


class ProjectThenAttend(nn.Module):
    """x [B, L, D] -> qkv projection (Linear D -> 3D, no bias) -> SDPA over H heads."""

    def __init__(self, dim: int = 32, heads: int = 4) -> None:
        super().__init__()
        self.heads = heads
        self.qkv = nn.Linear(dim, 3 * dim, bias=False)

    def forward(self, x):
        b, length, dim = x.shape
        q, k, v = self.qkv(x).view(b, length, 3, self.heads, dim // self.heads).permute(2, 0, 3, 1, 4)
        return F.scaled_dot_product_attention(q, k, v)


def test_flops_of_linear_plus_attention_by_hand():
    b, length, dim, heads = 2, 16, 32, 4
    report = profiling.count_flops(ProjectThenAttend(dim, heads).eval(), torch.randn(b, length, dim))
    linear = 2 * b * length * dim * (3 * dim)  # one multiply-add = 2 FLOPs
    attention = 2 * (2 * b * heads * length * length * (dim // heads))  # QK^T and AV, softmax not counted
    assert report["flops"] == linear + attention == 262144
    assert report["macs"] == report["flops"] // 2
    assert report["attention_flops"] == attention


def test_fused_multihead_attention_is_counted():
    """Eval + no grad takes the fused MHA fast path, invisible to FlopCounterMode; count_flops turns it off."""
    b, length, dim, heads = 2, 16, 32, 4
    mha = nn.MultiheadAttention(dim, heads, batch_first=True).eval()
    x = torch.randn(b, length, dim)
    projections = 4 * 2 * b * length * dim * dim  # q, k, v in-projections and the out-projection
    attention = 2 * (2 * b * heads * length * length * (dim // heads))
    assert profiling.count_flops(lambda: mha(x, x, x, need_weights=False))["flops"] == projections + attention
    assert torch.backends.mha.get_fastpath_enabled()  # restored afterwards


class FrozenText(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.embed = nn.Linear(4, 8)
        self.requires_grad_(False)


class TinyProfiled(CapeMethod):
    """Image path: 4x4 average pool + Linear(48, 32); prompt: Linear(2, 32) per keypoint; head: Linear(32, 2) per keypoint."""

    support_kinds = frozenset({"keypoints"})
    trainable = False

    def __init__(self, config=None) -> None:
        super().__init__(config)
        self.backbone = nn.Linear(48, 32)
        self.support_proj = nn.Linear(2, 32)
        self.head = nn.Linear(32, 2)
        self.text_tower = FrozenText()

    def encode_query(self, query: QueryBatch) -> Encoded:
        pooled = F.adaptive_avg_pool2d(query.images, 4).flatten(1)
        return Encoded(per_item={"feature": self.backbone(pooled)})

    def encode_support(self, support: SupportBatch) -> Encoded:
        return Encoded(per_keypoint={"embedding": self.support_proj(support.keypoints[:, 0])})

    def decode(self, query: Encoded, support: Encoded, pairs: PairBatch) -> torch.Tensor:
        return torch.sigmoid(self.head(support.per_keypoint["embedding"] + query.per_item["feature"][:, None]))


@pytest.fixture
def tiny_profiled(monkeypatch, tmp_path):
    from cape_bench.registry import _Entry

    METHODS.names()
    monkeypatch.setitem(METHODS._entries, "tiny-profiled", _Entry("tests.test_profiling:TinyProfiled", info={"support": "keypoints"}))
    config = tmp_path / "small.py"
    config.write_text("input_size = 16\n")
    return ["--method", "tiny-profiled", "--config", str(config)]


def test_stage_flops_and_parameter_split():
    method = TinyProfiled({"input_size": 16})
    flops = profiling.flop_report(method, torch.device("cpu"))
    k = 17  # the reference prompt: MP-100 horse body
    assert flops["image"]["flops"] == 2 * 48 * 32
    assert flops["prompt"]["flops"] == 2 * k * 2 * 32
    assert flops["head"]["flops"] == 2 * k * 32 * 2
    assert flops["query"]["flops"] == flops["image"]["flops"] + flops["head"]["flops"]
    assert flops["full"]["flops"] == flops["query"]["flops"] + flops["prompt"]["flops"]
    params = profiling.parameter_report(method)
    assert params["total"] == (48 * 32 + 32) + (2 * 32 + 32) + (32 * 2 + 2) + (4 * 8 + 8)
    assert params["frozen"] == 4 * 8 + 8 and params["towers"]["text"]["frozen"] == 40
    assert params["towers"]["image"]["total"] == 48 * 32 + 32  # found by the name 'backbone'
    assert {e["submodule"] for e in params["by_submodule"]} == {"backbone", "support_proj", "head", "text_tower"}


def test_profile_cli_writes_a_labelled_cpu_record(tiny_profiled, tmp_path, capsys):
    results = tmp_path / "res"
    assert main(["profile", *tiny_profiled, "--batch", "1,4", "--dtype", "fp32,bf16", "--iters", "3", "--warmup", "1", "--results", str(results)]) == 0
    out = capsys.readouterr().out
    assert "CPU" in out and "random init" in out and "GFLOPs" in out and "FPS" in out
    record = json.loads((results / "profiles" / "tiny-profiled-small" / "cpu.json").read_text())
    assert record["conditions"]["device"] == "cpu" and "not comparable with GPU" in record["conditions"]["label"]
    assert record["config"]["random_init"] is True
    assert [(r["dtype"], r["batch"]) for r in record["latency"]] == [("fp32", 1), ("fp32", 4), ("bf16", 1), ("bf16", 4)]
    row = record["latency"][1]
    assert set(row["stages"]) == set(profiling.STAGES)
    assert row["stages"]["query"]["iters"] == 3 and row["p90_ms"] >= row["latency_ms"] > 0
    assert row["fps"] == pytest.approx(4 * 1000 / row["latency_ms"])
    assert "git_revision" in record["provenance"] and "torch" in record["provenance"]["versions"]


def test_cuda_without_gpu_is_a_clear_error(monkeypatch, capsys):
    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)
    with pytest.raises(ConfigError, match="no CUDA GPU is visible"):
        profiling.resolve_device("cuda")
    assert main(["profile", "--method", "support-copy", "--device", "cuda"]) == 2
    assert "no CUDA GPU" in capsys.readouterr().err


@pytest.mark.parametrize(("flag", "value", "message"), [("--batch", "1,x", "--batch must be positive integers"), ("--batch", "0", "--batch must be"), ("--dtype", "fp8", "--dtype must be a comma list")])
def test_bad_profile_flags(flag, value, message, capsys):
    assert main(["profile", "--method", "support-copy", flag, value]) == 2
    assert message in capsys.readouterr().err


class JointOnly(TinyProfiled):
    separable = False

    def predict(self, batch):
        return self.decode(self.encode_query(batch.query), self.encode_support(batch.support), batch.pairs)


def test_non_separable_method_is_profiled_whole():
    method = JointOnly({"input_size": 16})
    flops = profiling.flop_report(method, torch.device("cpu"))
    assert set(flops) >= {"full", "note"} and "image" not in flops
    assert flops["full"]["flops"] == 2 * 48 * 32 + 2 * 17 * 2 * 32 + 2 * 17 * 32 * 2
    rows = profiling.latency_report(method, torch.device("cpu"), [2], ["fp32"], iters=2, warmup=1)
    assert set(rows[0]["stages"]) == {"full"} and rows[0]["fps"] > 0
