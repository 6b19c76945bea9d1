"""`cape-bench`: a thin layer that parses flags and calls the library.

Every expected failure is a `CapeBenchError`, printed as one line on stderr
with exit code 2; `--debug` shows the traceback instead.
"""
from __future__ import annotations

import argparse
import sys
from pathlib import Path

from cape_bench.errors import CapeBenchError, ConfigError

COMMANDS = {}


def command(name: str):
    """Register `fn(args)` as the handler of subcommand `name`."""

    def register(fn):
        COMMANDS[name] = fn
        return fn

    return register


def _parse_splits(value: str) -> list[int]:
    if value == "all":
        return [1, 2, 3, 4, 5]
    try:
        splits = [int(v) for v in value.split(",")]
    except ValueError:
        raise ConfigError(f"--split must be 1..5, a comma list or 'all', got {value!r}") from None
    bad = [s for s in splits if s not in range(1, 6)]
    if bad:
        raise ConfigError(f"--split must be 1..5, a comma list or 'all', got {value!r}")
    return splits


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="cape-bench", description="Category-Agnostic Pose Estimation benchmark (MP-100)")
    parser.add_argument("--debug", action="store_true", help="show tracebacks")
    sub = parser.add_subparsers(dest="command", required=True)

    sub.add_parser("list", help="registered methods (support, configs) and protocols")

    run = sub.add_parser("run", help="evaluate a method under a protocol")
    run.add_argument("--method", required=True)
    run.add_argument("--config", help="config name in the method's configs/ or a path (default: tiny on demo data)")
    run.add_argument("--cfg-options", nargs="*", metavar="KEY=VALUE", help="override config values")
    run.add_argument("--protocol", default="oneshot")
    run.add_argument("--split", default="all", help="1..5, a comma list, or all")
    run.add_argument("--subset", default="test", choices=("test", "val"))
    run.add_argument("--data", help="MP-100 root (default: $CAPE_BENCH_DATA, the config file, else the demo data)")
    run.add_argument("--checkpoint", type=Path)
    run.add_argument("--seed", type=int, default=1, help="episode seed (upstream: 1)")
    run.add_argument("--episodes", default="mp100", choices=("mp100", "per-category"), help="mp100 reproduces the upstream pair list")
    run.add_argument("--num-episodes", type=int, default=200, help="episodes per category")
    run.add_argument("--queries", type=int, default=15, help="queries per episode")
    run.add_argument("--shots", type=int, default=1)
    run.add_argument("--keypoint-texts", type=Path, help="JSON: category id -> {variant -> [strings]}")
    run.add_argument("--text-variant", default="regular")
    run.add_argument("--batch-size", type=int, default=64, help="pairs per decode batch")
    run.add_argument("--device", default="cpu")
    run.add_argument("--workers", type=int, default=0, help="image decoding/cropping processes")
    run.add_argument("--naive", action="store_true", help="every pair alone at batch 1 (reference path)")
    run.add_argument("--force", action="store_true", help="re-run even if a result with the same config hash exists")
    run.add_argument("--results", help="results folder (default: $CAPE_BENCH_RESULTS or ./results)")
    run.add_argument("--no-progress", action="store_true")

    data = sub.add_parser("data", help="dataset tools")
    data_sub = data.add_subparsers(dest="data_command", required=True)
    verify = data_sub.add_parser("verify", help="check a local MP-100 install")
    verify.add_argument("--root", help="dataset root (default: as for run)")
    verify.add_argument("--no-images", action="store_true", help="skip the image existence check")
    demo = data_sub.add_parser("demo", help="generate (or locate) the built-in demo dataset")
    demo.add_argument("--out", type=Path, help="write here instead of the cache")
    demo.add_argument("--seed", type=int, default=0)

    board = sub.add_parser("leaderboard", help="render tables from stored runs")
    board.add_argument("--protocol", help="only this protocol label")
    board.add_argument("--dataset", help="only runs on this dataset (demo or mp100)")
    board.add_argument("--format", default="md", help="md, csv or md,csv")
    board.add_argument("--results", help="results folder")
    board.add_argument("--output", type=Path, help="markdown file (default: <results>/leaderboard.md)")
    return parser


@command("list")
def _list(args) -> int:
    from cape_bench.build import list_configs
    from cape_bench.registry import METHODS, PROTOCOLS

    print("Methods:")
    for name in METHODS.names():
        info = METHODS.info(name)
        aliases = METHODS.aliases_of(name)
        print(f"  {name:<16} support: {info.get('support', '?'):<14} configs: {', '.join(list_configs(name)) or '-'}")
        if info.get("summary"):
            print(f"  {'':<16} {info['summary']}" + (f" (aliases: {', '.join(aliases)})" if aliases else ""))
    print("Protocols:")
    for name in PROTOCOLS.names():
        print(f"  {name:<16} {PROTOCOLS.info(name).get('summary', '')}")
    return 0


@command("run")
def _run(args) -> int:
    from cape_bench.runs import run_command

    return run_command(
        method=args.method, config=args.config, cfg_options=args.cfg_options, protocol=args.protocol,
        splits=_parse_splits(args.split), subset=args.subset, data=args.data, checkpoint=args.checkpoint,
        seed=args.seed, episode_mode=args.episodes, num_episodes=args.num_episodes, queries=args.queries,
        shots=args.shots, keypoint_texts=args.keypoint_texts, text_variant=args.text_variant,
        batch_size=args.batch_size, device=args.device, workers=args.workers, naive=args.naive,
        force=args.force, results=args.results, progress=not args.no_progress,
    )


@command("data")
def _data(args) -> int:
    if args.data_command == "demo":
        from cape_bench.data.demo import ensure_demo_dataset, generate_demo_dataset

        path = generate_demo_dataset(args.out, seed=args.seed) if args.out else ensure_demo_dataset(seed=args.seed)
        print(f"demo dataset (MP-100 format) at {path}")
        return 0
    from cape_bench.data.layout import DatasetRoot, resolve_dataset
    from cape_bench.data.verify import verify_dataset

    if args.root:
        root = DatasetRoot(Path(args.root))
    else:
        root = resolve_dataset(None)
        if root.is_demo:
            print(f"no MP-100 root configured: verifying the built-in demo data at {root.root}")
    report = verify_dataset(root, check_images=not args.no_images)
    print(report.render())
    return 0 if report.ok else 1


@command("leaderboard")
def _leaderboard(args) -> int:
    from cape_bench.leaderboard import write_leaderboard

    formats = [f.strip() for f in args.format.split(",") if f.strip()]
    for path in write_leaderboard(results=args.results, protocol=args.protocol, dataset=args.dataset, formats=formats, output=args.output):
        print(f"wrote {path}")
    return 0


def main(argv: list[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    try:
        return COMMANDS[args.command](args)
    except CapeBenchError as error:
        if args.debug:
            raise
        print(f"cape-bench: error: {error}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print("cape-bench: interrupted", file=sys.stderr)
        return 130


if __name__ == "__main__":
    sys.exit(main())
