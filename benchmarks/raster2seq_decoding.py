"""Raster2Seq greedy decoding with and without the KV cache: tokens/s and queries/s.

    python benchmarks/raster2seq_decoding.py [--config tiny] [--keypoints 17] [--batch 1,16] [--repeats 3] [--device cpu]

Times `decode` only (query and support are encoded once beforehand), on random crops and a
random support of `--keypoints` visible keypoints (17 = MP-100's median). A token is one
position of the written sequence, 4K + 1 per query (`<coord>, x, y, <sep>` per keypoint and
`<eos>`); x and y are generated, the others are forced by the grammar. A full-size `--config`
is built with random weights (`random_init=True`): timings do not depend on the weights.
"""
from __future__ import annotations

import argparse
import time

import torch

from cape_bench.build import build_method
from cape_bench.method import PairBatch, QueryBatch, SupportBatch
from cape_bench.methods.raster2seq.sequence import TOKENS_PER_KEYPOINT
from cape_bench.provenance import device_description, git_revision


def random_episode(input_size: int, batch: int, num_kpt: int, device: str) -> tuple[QueryBatch, SupportBatch, PairBatch]:
    gen = torch.Generator().manual_seed(0)
    skeleton = [(i, i + 1) for i in range(num_kpt - 1)]
    visible = torch.ones(batch, 1, num_kpt, dtype=torch.bool)
    query = QueryBatch(torch.randn(batch, 3, input_size, input_size, generator=gen).to(device), [0] * batch)
    support = SupportBatch(None, (torch.rand(batch, 1, num_kpt, 2, generator=gen) * 0.8 + 0.1).to(device),
                           visible.to(device), [[]] * batch, [skeleton] * batch, [0] * batch)
    return query, support, PairBatch(visible[:, 0].to(device), [skeleton] * batch, [""] * batch)


def time_decoding(method, query, support, pairs, use_cache: bool, repeats: int, device: str) -> float:
    """Best of `repeats` wall-clock seconds of one `decode` call (after one warm-up call)."""
    method.kv_cache = use_cache
    best = float("inf")
    for attempt in range(repeats + 1):
        if device.startswith("cuda"):
            torch.cuda.synchronize()
        start = time.perf_counter()
        method.decode(query, support, pairs)
        if device.startswith("cuda"):
            torch.cuda.synchronize()
        if attempt:
            best = min(best, time.perf_counter() - start)
    return best


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--config", default="tiny")
    parser.add_argument("--keypoints", type=int, default=17)
    parser.add_argument("--batch", default="1,16", help="queries per decode call, comma-separated")
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--device", default="cpu")
    args = parser.parse_args()
    overrides = None if args.config == "tiny" else {"random_init": True}
    method = build_method("raster2seq", args.config, overrides)[0].eval().to(args.device)
    print(f"raster2seq/{args.config}, device {device_description(args.device)}, torch {torch.__version__}, "
          f"git {git_revision()}, K={args.keypoints}")
    print(f"{'batch':>5} {'cache':>6} {'s/call':>8} {'tokens/s':>10} {'queries/s':>10} {'speed-up':>9}")
    tokens_per_query = TOKENS_PER_KEYPOINT * args.keypoints + 1
    for batch in (int(b) for b in args.batch.split(",")):
        query, support, pairs = random_episode(method.input_size, batch, args.keypoints, args.device)
        with torch.inference_mode():
            query_encoded, support_encoded = method.encode_query(query), method.encode_support(support)
            seconds = {cache: time_decoding(method, query_encoded, support_encoded, pairs, cache, args.repeats, args.device)
                       for cache in (False, True)}
        for cache, elapsed in seconds.items():
            speed_up = f"{seconds[False] / elapsed:>8.2f}x"
            print(f"{batch:>5} {'on' if cache else 'off':>6} {elapsed:>8.3f} {batch * tokens_per_query / elapsed:>10.0f} "
                  f"{batch / elapsed:>10.1f} {speed_up:>9}")


if __name__ == "__main__":
    main()
