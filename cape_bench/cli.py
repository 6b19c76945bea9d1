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
    run.add_argument("--method", help="method name (optional with --checkpoint: taken from the file)")
    run.add_argument("--config", help="config name in the method's configs/ or a path (default: tiny on demo data)")
    run.add_argument("--cfg-options", nargs="*", metavar="KEY=VALUE", help="override config values")
    run.add_argument("--protocol", default="oneshot")
    run.add_argument("--split", default="all", help="1..5, a comma list, or all")
    run.add_argument("--subset", default="test", choices=("test", "val"))
    run.add_argument("--data", help="MP-100 root (default: $CAPE_BENCH_DATA, the config file, else the demo data)")
    run.add_argument("--checkpoint", type=Path, help="official GraphCape/CapeX/CapeNext .pth or a cape-bench .safetensors; selects method and config")
    run.add_argument("--no-train", action="store_true", help="on the demo data, do not train trainable methods first (evaluate initial weights)")
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
    run.add_argument("--compile", action="store_true", help="torch.compile the query encoder and the decoder")
    run.add_argument("--force", action="store_true", help="re-run even if a result with the same config hash exists")
    run.add_argument("--results", help="results folder (default: $CAPE_BENCH_RESULTS or ./results)")
    run.add_argument("--no-progress", action="store_true")
    noise = run.add_argument_group("robustness protocol (--protocol robustness)")
    noise.add_argument("--noise", help="class | keypoint-typo | keypoint-substitution | synonym | keypoint-variant")
    noise.add_argument("--noise-rate", help="fraction of pairs (class) or strings (typos) in [0, 1]; a comma list is a sweep (default 1)")
    noise.add_argument("--typo-edits", type=int, help="edits per corrupted string (default 1)")
    noise.add_argument("--replace", action="append", metavar="OLD=NEW", help="whole-word substitution (repeatable), e.g. paw=foreleg")
    noise.add_argument("--synonyms", type=Path, help="JSON {word: replacement} for --noise synonym")
    noise.add_argument("--noise-variant", help="text-list variant for --noise keypoint-variant (e.g. typo from --keypoint-texts)")
    noise.add_argument("--noise-seed", type=int, help="seed of the noise draws (default 0)")
    noise.add_argument("--per-category", action="store_true", help="also print clean / perturbed / drop per category")

    trn = sub.add_parser("train", help="train a method on MP-100 splits (upstream recipe; torchrun for DDP)")
    trn.add_argument("--method", required=True)
    trn.add_argument("--split", required=True, help="1..5, a comma list, or all")
    trn.add_argument("--config", help="config name in the method's configs/ or a path (default: tiny on demo data)")
    trn.add_argument("--cfg-options", nargs="*", metavar="KEY=VALUE", help="override config values, e.g. train.lr=1e-4")
    trn.add_argument("--data", help="MP-100 root (default: $CAPE_BENCH_DATA, the config file, else the demo data)")
    trn.add_argument("--work-dir", type=Path, help="output folder (default: work_dirs/<method>-<config>); one split<k> folder per split")
    trn.add_argument("--seed", type=int, default=1, help="pair sampling, augmentation and init seed (upstream: 1)")
    trn.add_argument("--epochs", type=int, help="override train.epochs (upstream: 200)")
    trn.add_argument("--max-iters", type=int, help="stop after this many iterations")
    trn.add_argument("--device", default="cpu", help="cpu, cuda or cuda:N (under torchrun each rank uses its LOCAL_RANK GPU)")
    trn.add_argument("--workers", type=int, help="DataLoader worker processes (default: train.num_workers)")
    trn.add_argument("--keypoint-texts", type=Path, help="JSON: category id -> {variant -> [strings]}")
    trn.add_argument("--resume", action="store_true", help="continue from <work-dir>/split<k>/last_state.pth")

    conv = sub.add_parser("convert", help="say what a checkpoint is; write it as a cape-bench checkpoint (safetensors + json)")
    conv.add_argument("source", type=Path, help="official GraphCape/CapeX/CapeNext .pth (mmcv or bare state dict) or a cape-bench .safetensors")
    conv.add_argument("target", type=Path, nargs="?", help="output path (OUT.safetensors + OUT.json); omit to only print what SOURCE is")
    conv.add_argument("--method", help="expected method (an error says what the file looks like if it differs)")
    conv.add_argument("--config", help="config name or file (default: detected from the file)")
    conv.add_argument("--cfg-options", nargs="*", metavar="KEY=VALUE", help="override config values")
    conv.add_argument("--to-upstream", action="store_true", help="write the upstream (mmcv .pth) layout instead")

    data = sub.add_parser("data", help="dataset tools")
    data_sub = data.add_subparsers(dest="data_command", required=True)
    verify = data_sub.add_parser("verify", help="check a local MP-100 install")
    verify.add_argument("--root", help="dataset root (default: as for run)")
    verify.add_argument("--no-images", action="store_true", help="skip the image existence check")
    demo = data_sub.add_parser("demo", help="generate (or locate) the built-in demo dataset")
    demo.add_argument("--out", type=Path, help="write here instead of the cache")
    demo.add_argument("--seed", type=int, default=0)
    overlap = data_sub.add_parser("overlap", help="share of val/test keypoint descriptions already used by a split's training categories")
    overlap_source = overlap.add_mutually_exclusive_group()
    overlap_source.add_argument("--root", help="dataset root (default: as for run)")
    overlap_source.add_argument("--mp100-table", action="store_true", help="the published MP-100 splits and shipped descriptions (no local MP-100 needed)")
    overlap.add_argument("--keypoint-texts", type=Path, help="JSON: category id -> {variant -> [strings]}")
    overlap.add_argument("--text-variant", default="regular")
    overlap.add_argument("--per-category", action="store_true", help="also one row per val/test category")
    overlap.add_argument("--encoder", help="also the cosine to the nearest training description under this text encoder (e.g. minilm)")
    overlap.add_argument("--encoder-options", nargs="*", metavar="KEY=VALUE", help="encoder arguments, e.g. model_dir=DIR or weights=ViT-B-32.pt")

    board = sub.add_parser("leaderboard", help="render tables from stored runs")
    board.add_argument("--protocol", help="only this protocol label")
    board.add_argument("--dataset", help="only runs on this dataset (demo or mp100)")
    board.add_argument("--format", default="md", help="md, csv or md,csv")
    board.add_argument("--results", help="results folder")
    board.add_argument("--output", type=Path, help="markdown file (default: <results>/leaderboard.md)")
    board.add_argument("--readme", type=Path, help="also regenerate this README's section between the leaderboard markers")

    prof = sub.add_parser("profile", help="params, FLOPs per stage, latency/FPS and peak memory of a method")
    prof.add_argument("--method", required=True)
    prof.add_argument("--config", help="config name or path (default: the method's full-size default, built with random_init=True)")
    prof.add_argument("--cfg-options", nargs="*", metavar="KEY=VALUE", help="override config values")
    prof.add_argument("--checkpoint", type=Path, help="load weights instead of random init")
    prof.add_argument("--device", default="cpu", help="cpu or cuda[:N]")
    prof.add_argument("--batch", default="1", help="comma list of batch sizes (queries per call), e.g. 1,8,32")
    prof.add_argument("--dtype", default="fp32", help="comma list of fp32, bf16, fp16 (autocast)")
    prof.add_argument("--compile", action="store_true", help="torch.compile the three stages (compile time is in the warm-up)")
    prof.add_argument("--iters", type=int, default=100, help="timed calls per stage (>= 100 for reported numbers)")
    prof.add_argument("--warmup", type=int, default=10, help="untimed calls first")
    prof.add_argument("--no-flops", action="store_true", help="skip FLOP counting")
    prof.add_argument("--results", help="results folder (profiles go to <results>/profiles/)")

    plot = sub.add_parser("plot", help="PNG figures from stored results: robustness curves, latency vs batch, qualitative panels")
    plot.add_argument("--kind", default="all", help="comma list of robustness, latency, qualitative (default all)")
    plot.add_argument("--results", help="results folder")
    plot.add_argument("--out", type=Path, help="output folder (default: <results>/figures)")
    plot.add_argument("--method", help="qualitative: run name or method (default: every run with stored predictions)")
    plot.add_argument("--protocol", default="oneshot", help="qualitative: protocol label of the run (default oneshot)")
    plot.add_argument("--split", type=int, default=1, help="qualitative: split (default 1)")
    plot.add_argument("--episodes", default="0", help="qualitative: comma list of episode indices (default 0)")
    plot.add_argument("--predictions", default=None, help="qualitative: prediction set of the run (predictions, clean, perturbed-r1, ...)")
    plot.add_argument("--data", help="dataset root of the run (default: as for run)")

    pred = sub.add_parser("predict", help="predict keypoints on one image and draw them")
    pred.add_argument("--method", required=True)
    pred.add_argument("--config", help="config name or path (default: the method's default)")
    pred.add_argument("--cfg-options", nargs="*", metavar="KEY=VALUE", help="override config values")
    pred.add_argument("--checkpoint", type=Path)
    pred.add_argument("--image", required=True, type=Path, help="query image")
    pred.add_argument("--bbox", help="x,y,w,h of the object in the query image (default: the whole image)")
    pred.add_argument("--keypoints", help='keypoint descriptions, comma separated: "left eye,right eye,nose"')
    pred.add_argument("--skeleton", help="edges as 0-based index pairs: 0-1,1-2")
    pred.add_argument("--class", dest="class_name", help="class name for methods that take one")
    pred.add_argument("--support-image", type=Path, help="support image (image / keypoint methods)")
    pred.add_argument("--support-keypoints", type=Path, help="JSON list of [x, y] or [x, y, v] in support-image pixels")
    pred.add_argument("--support-bbox", help="x,y,w,h of the support object (default: the whole support image)")
    pred.add_argument("--out", type=Path, help="output image (default: <image stem>.<method>.png in the current folder)")
    pred.add_argument("--device", default="cpu")
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
        batch_size=args.batch_size, device=args.device, workers=args.workers, naive=args.naive, compile=args.compile,
        force=args.force, results=args.results, progress=not args.no_progress,
        protocol_options=_noise_options(args), per_category=args.per_category, train_demo=not args.no_train,
    )


def _noise_options(args) -> dict:
    """The robustness flags that were given (the protocol refuses them elsewhere)."""
    names = ("noise", "noise_rate", "typo_edits", "replace", "synonyms", "noise_variant", "noise_seed")
    return {name: getattr(args, name) for name in names if getattr(args, name) is not None}


@command("train")
def _train(args) -> int:
    from cape_bench.engine.train import train_command

    return train_command(
        method=args.method, split=_parse_splits(args.split), config=args.config, cfg_options=args.cfg_options,
        data=args.data, work_dir=args.work_dir, seed=args.seed, epochs=args.epochs, max_iters=args.max_iters,
        device=args.device, resume=args.resume, workers=args.workers, keypoint_texts=args.keypoint_texts,
    )


@command("convert")
def _convert(args) -> int:
    from cape_bench.upstream import convert_command

    return convert_command(args.source, args.target, method=args.method, config=args.config, cfg_options=args.cfg_options, to_upstream=args.to_upstream)


@command("data")
def _data(args) -> int:
    return _DATA_COMMANDS[args.data_command](args)


def _data_demo(args) -> int:
    from cape_bench.data.demo import ensure_demo_dataset, generate_demo_dataset

    path = generate_demo_dataset(args.out, seed=args.seed) if args.out else ensure_demo_dataset(seed=args.seed)
    print(f"demo dataset (MP-100 format) at {path}")
    return 0


def _data_root(args, action: str):
    """`--root` if given, else the dataset `run` would use (saying so when that is the demo)."""
    from cape_bench.data.layout import DatasetRoot, resolve_dataset

    if args.root:
        return DatasetRoot(Path(args.root))
    root = resolve_dataset(None)
    if root.is_demo:
        print(f"no MP-100 root configured: {action} the built-in demo data at {root.root}")
    return root


def _data_verify(args) -> int:
    from cape_bench.data.verify import verify_dataset

    report = verify_dataset(_data_root(args, "verifying"), check_images=not args.no_images)
    print(report.render())
    return 0 if report.ok else 1


def _data_overlap(args) -> int:
    from cape_bench.data import text_overlap

    embed = _text_embedder(args.encoder, args.encoder_options) if args.encoder else None
    if args.mp100_table:
        overlaps = text_overlap.mp100_table_overlap(args.keypoint_texts, args.text_variant, embed)
        source = "published MP-100 splits"
    else:
        root = _data_root(args, "reading")
        overlaps, source = text_overlap.dataset_overlap(root, args.keypoint_texts, args.text_variant, embed), str(root.root)
    print(text_overlap.render_overlap(overlaps, source, per_category=args.per_category, encoder=args.encoder))
    return 0


def _text_embedder(name: str, options: list[str] | None):
    """A registered text encoder behind the embedding cache, so each string is encoded once."""
    import functools

    from cape_bench.build import parse_overrides
    from cape_bench.nn.embedding_cache import EmbeddingCache
    from cape_bench.nn.text_encoders import build_text_encoder

    return functools.partial(EmbeddingCache().encode, build_text_encoder(name, **parse_overrides(options)))


_DATA_COMMANDS = {"demo": _data_demo, "verify": _data_verify, "overlap": _data_overlap}


@command("leaderboard")
def _leaderboard(args) -> int:
    from cape_bench.leaderboard import write_leaderboard

    formats = [f.strip() for f in args.format.split(",") if f.strip()]
    for path in write_leaderboard(results=args.results, protocol=args.protocol, dataset=args.dataset, formats=formats, output=args.output, readme=args.readme):
        print(f"wrote {path}")
    return 0


@command("profile")
def _profile(args) -> int:
    from cape_bench import profiling

    request = profiling.ProfileRequest(
        method=args.method, config=args.config, cfg_options=args.cfg_options, checkpoint=args.checkpoint, device=args.device,
        batches=profiling.parse_int_list(args.batch, "--batch"), dtypes=profiling.parse_dtypes(args.dtype), compile=args.compile,
        iters=args.iters, warmup=args.warmup, flops=not args.no_flops, results=args.results,
    )
    record, path = profiling.profile(request)
    print(profiling.render_profile(record))
    if args.iters < 100:
        print(f"note: {args.iters} timed calls; the suite reports medians over >= 100")
    print(f"wrote {path}")
    return 0


@command("plot")
def _plot(args) -> int:
    from cape_bench.plots import write_plots

    for path in write_plots(
        results=args.results, out=args.out, kinds=args.kind, method=args.method, protocol=args.protocol, split=args.split,
        episodes=args.episodes, prediction_set=args.predictions, data=args.data,
    ):
        print(f"wrote {path}")
    return 0


@command("predict")
def _predict(args) -> int:
    from cape_bench.predict import predict_command

    return predict_command(args)


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
