"""Efficiency profiling: parameters, FLOPs per stage, latency, throughput, peak memory.

What is measured (the suite definition of PROTOCOLS.md 4.3, made explicit):

* Inputs are pre-loaded random tensors on the device (no data loading), one
  256x256 query per item and, for image methods, a 256x256 support; the prompt
  is a fixed reference category (`REFERENCE_CATEGORY`: the MP-100 horse body,
  17 keypoints with the shipped descriptions and the AP-10K skeleton).
* Stages follow the method interface: the image path (`encode_query`, per
  query), the prompt (`encode_support`, once per category: text or support
  image encoding; text-embedding caches are emptied before every call so the
  encoder really runs) and the per-query head (`decode`). `query` = image +
  head, i.e. the per-query cost once a category's prompt is encoded (how the
  evaluator runs); `full` = prompt + image + head, the per-sample forward that
  upstream timing scripts measure (CapeNext `computationalOverhead.py`).
* FLOPs: `torch.utils.flop_counter.FlopCounterMode`, which counts matrix
  multiplications, convolutions and attention kernels only (element-wise ops,
  norms and softmax are not counted) and reports 2 FLOPs per multiply-add; we
  report FLOPs and MACs = FLOPs / 2. Attention: `scaled_dot_product_attention`
  is counted on every backend (CPU `_scaled_dot_product_flash_attention_for_cpu`,
  CUDA flash / memory-efficient / cuDNN kernels, and the math fallback through
  its `bmm`s) as 4*B*H*L*S*E (QK^T and AV; softmax not counted), the same count on
  CPU and CUDA. `nn.MultiheadAttention` and `nn.TransformerEncoderLayer` in eval
  mode without grad take a fused fast path (`_native_multi_head_attention`,
  `_transformer_encoder_layer_fwd`) that the counter does not see at all (0
  FLOPs, projections included), so the fast path is switched off while
  counting (`torch.backends.mha.set_fastpath_enabled(False)`); timings keep it.
  FLOPs do not depend on the device, dtype or batch (counted at batch 1).
* Latency: after `warmup` calls (torch.compile happens there), `iters` timed
  calls per stage; CUDA: CUDA events with a synchronisation after each call;
  CPU: `time.perf_counter` (synchronous). Median, p90 and mean per call; FPS =
  batch * 1000 / median ms (queries per second).
* Peak memory: CUDA: `torch.cuda.max_memory_allocated` during one `full` call
  (and above the weights); CPU: the increase of the process's peak RSS (VmHWM,
  reset through /proc/self/clear_refs) during one `full` call; "n/a" where the
  kernel does not offer it. CPU memory includes allocator caching and is not
  comparable with CUDA numbers.
* `dtype` bf16 / fp16 = autocast with fp32 weights (as the evaluator runs on CUDA).

Full-size configs are built with `random_init=True` (a config override):
weights do not change FLOPs or timing.
"""
from __future__ import annotations

import contextlib
import json
import os
import platform
import re
import time
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import torch
from torch import nn

from cape_bench.errors import CapeBenchError, ConfigError
from cape_bench.method import (
    MAX_KEYPOINTS,
    CapeMethod,
    Encoded,
    PairBatch,
    QueryBatch,
    SupportBatch,
)

REFERENCE_CATEGORY = 2  # MP-100 horse_body: 17 keypoints, AP-10K layout
# AP-10K skeleton (mmpose ap10k.py), 0-based.
AP10K_SKELETON = ((0, 1), (0, 2), (1, 2), (2, 3), (3, 4), (3, 5), (5, 6), (6, 7), (3, 8), (8, 9), (9, 10), (4, 11), (11, 12), (12, 13), (4, 14), (14, 15), (15, 16))
DTYPES = {"fp32": None, "bf16": torch.bfloat16, "fp16": torch.float16}
STAGES = ("image", "prompt", "head", "query", "full")
ATTENTION_OPS = ("attention", "flex_attention")
SCHEMA_VERSION = 1


# ------------------------------------------------------------------ devices
def resolve_device(name: str | torch.device) -> torch.device:
    """`cpu`, `cuda`, `cuda:N`: checked, with a one-line error when there is no such device."""
    try:
        device = torch.device(name)
    except RuntimeError:
        raise ConfigError(f"--device {name!r}: not a device name; use cpu or cuda[:N]") from None
    if device.type == "cuda":
        if not torch.cuda.is_available():
            raise ConfigError(f"--device {name}: no CUDA GPU is visible to torch on this machine (torch.cuda.is_available() is False); use --device cpu")
        if device.index is not None and device.index >= torch.cuda.device_count():
            raise ConfigError(f"--device {name}: only {torch.cuda.device_count()} CUDA device(s) visible")
    elif device.type != "cpu":
        raise ConfigError(f"--device {name!r}: cape-bench runs on cpu or cuda")
    return device


def device_conditions(device: torch.device) -> dict:
    """What the numbers were measured on, for the result and for the table's label."""
    if device.type == "cuda":
        props = torch.cuda.get_device_properties(device)
        return {
            "device": "cuda", "device_name": props.name, "label": f"GPU: {props.name}",
            "memory_gib": round(props.total_memory / 2**30, 1), "cuda": torch.version.cuda,
            "cudnn": torch.backends.cudnn.version(),
        }
    cpu = _cpu_name()
    return {
        "device": "cpu", "device_name": cpu, "label": f"CPU: {cpu}, {torch.get_num_threads()} threads (CPU timings; not comparable with GPU numbers)",
        "threads": torch.get_num_threads(), "logical_cpus": os.cpu_count(),
    }


def _cpu_name() -> str:
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or platform.machine()


# --------------------------------------------------------------- parameters
def _tower_of_modules(method: nn.Module) -> dict[str, str]:
    """Module path -> 'image' / 'text' for the modules that are image backbones or text encoders."""
    kinds = {}
    try:
        from cape_bench.nn.backbones import ImageBackbone
    except ImportError:  # pragma: no cover - timm missing
        ImageBackbone = ()
    from cape_bench.nn.text_encoders import FrozenEncoder

    for path, module in method.named_modules():
        if ImageBackbone and isinstance(module, ImageBackbone):
            kinds[path] = "image"
        elif isinstance(module, FrozenEncoder):
            kinds[path] = "text"
        elif path and path.rsplit(".", 1)[-1] in ("visual", "vision_model", "image_encoder") and any(path.startswith(p + ".") for p, k in kinds.items() if k == "text"):
            kinds[path] = "image"  # a CLIP model's image tower inside a text-encoder wrapper
    return kinds


def _tower(parameter_name: str, kinds: dict[str, str]) -> str:
    best, kind = -1, None
    for path, value in kinds.items():
        if (parameter_name.startswith(path + ".") or not path) and len(path) > best:
            best, kind = len(path), value
    if kind is not None:
        return kind
    segments = parameter_name.lower().split(".")
    if any("text" in s for s in segments[:-1]):
        return "text"
    if any(s in ("backbone", "image_encoder", "visual") for s in segments[:-1]):
        return "image"
    return "other"


def parameter_report(method: nn.Module) -> dict:
    """Total / trainable / frozen counts, by tower (image, text, other) and by top-level submodule.

    A tower is an `ImageBackbone` or a text encoder (`FrozenEncoder`; a CLIP
    image tower held inside one counts as image), else guessed from the
    parameter path ('backbone', 'text...'); everything else is 'other'.
    """
    kinds = _tower_of_modules(method)
    towers = {k: {"total": 0, "trainable": 0, "frozen": 0} for k in ("image", "text", "other")}
    by_child: dict[str, dict] = {}
    total = trainable = 0
    for name, parameter in method.named_parameters():
        count = parameter.numel()
        train = parameter.requires_grad
        total += count
        trainable += count * train
        tower = towers[_tower(name, kinds)]
        tower["total"] += count
        tower["trainable" if train else "frozen"] += count
        child = name.split(".", 1)[0] if "." in name else "(own)"
        entry = by_child.setdefault(child, {"submodule": child, "type": "", "tower": _tower(name, kinds), "total": 0, "trainable": 0, "frozen": 0})
        entry["total"] += count
        entry["trainable" if train else "frozen"] += count
    for child, entry in by_child.items():
        module = getattr(method, child, None)
        entry["type"] = type(module).__name__ if isinstance(module, nn.Module) else "parameter"
    buffers = sum(b.numel() for b in method.buffers())
    return {"total": total, "trainable": trainable, "frozen": total - trainable, "buffers": buffers, "towers": towers, "by_submodule": sorted(by_child.values(), key=lambda e: -e["total"])}


# ------------------------------------------------------------------- inputs
@dataclass
class ReferenceInputs:
    """Pre-loaded tensors for one profiling batch size."""

    query: QueryBatch
    support: SupportBatch
    pairs: PairBatch
    batch: int
    keypoints: int
    slots: int


def reference_prompt() -> tuple[str, list[str], tuple[tuple[int, int], ...]]:
    """(class name, keypoint descriptions, skeleton) of the reference category."""
    from cape_bench.data.keypoint_texts import packaged_texts
    from cape_bench.data.mp100_table import mp100_categories

    category = mp100_categories()[REFERENCE_CATEGORY]
    texts = packaged_texts().lists[REFERENCE_CATEGORY]["regular"]
    return category.name.replace("_", " "), list(texts), AP10K_SKELETON


def reference_inputs(method: CapeMethod, batch: int, device: torch.device, seed: int = 0) -> ReferenceInputs:
    class_name, texts, skeleton = reference_prompt()
    k = len(texts)
    slots = k if method.pads_keypoints_dynamically else MAX_KEYPOINTS
    generator = torch.Generator().manual_seed(seed)
    size = method.input_size
    images = torch.randn(batch, 3, size, size, generator=generator).to(device) if method.uses_query_image else None
    support_image = torch.randn(1, 1, 3, size, size, generator=generator).to(device) if "image" in method.support_kinds else None
    keypoints = torch.zeros(1, 1, slots, 2)
    keypoints[0, 0, :k] = torch.rand(k, 2, generator=generator) * 0.6 + 0.2
    visible = torch.zeros(1, 1, slots, dtype=torch.bool)
    visible[0, 0, :k] = True
    mask = torch.zeros(batch, slots, dtype=torch.bool)
    mask[:, :k] = True
    return ReferenceInputs(
        query=QueryBatch(images, [REFERENCE_CATEGORY] * batch),
        support=SupportBatch(support_image, keypoints.to(device), visible.to(device), [texts], [list(skeleton)], [REFERENCE_CATEGORY]),
        pairs=PairBatch(mask.to(device), [list(skeleton)] * batch, [class_name] * batch),
        batch=batch, keypoints=k, slots=slots,
    )


def _embedding_caches(method: nn.Module) -> list:
    from cape_bench.nn.embedding_cache import EmbeddingCache

    found = []
    for module in method.modules():
        for value in vars(module).values():
            if isinstance(value, EmbeddingCache) and all(value is not f for f in found):
                found.append(value)
    return found


def _clear_caches(caches: list) -> None:
    for cache in caches:
        cache.clear()


class Stages:
    """The stage callables of one method on one set of reference inputs."""

    def __init__(self, method: CapeMethod, inputs: ReferenceInputs) -> None:
        self.method = method
        self.inputs = inputs
        self.caches = _embedding_caches(method)
        self.separable = method.separable
        if self.separable:
            with torch.inference_mode():
                _clear_caches(self.caches)
                self._query = method.encode_query(inputs.query)
                self._support = self._expand(method.encode_support(inputs.support).padded(inputs.slots), inputs.batch)

    @staticmethod
    def _expand(encoded: Encoded, batch: int) -> Encoded:
        return encoded.select(torch.zeros(batch, dtype=torch.long))

    def image(self):
        return self.method.encode_query(self.inputs.query)

    def prompt(self):
        _clear_caches(self.caches)
        return self.method.encode_support(self.inputs.support)

    def head(self):
        return self.method.decode(self._query, self._support, self.inputs.pairs)

    def query(self):
        return self.method.decode(self.method.encode_query(self.inputs.query), self._support, self.inputs.pairs)

    def full(self):
        _clear_caches(self.caches)
        if not self.separable:
            return self.method.predict(self._pair_batch())
        support = self._expand(self.method.encode_support(self.inputs.support).padded(self.inputs.slots), self.inputs.batch)
        return self.method.decode(self.method.encode_query(self.inputs.query), support, self.inputs.pairs)

    def _pair_batch(self):
        from cape_bench.method import CapeBatch

        s, b = self.inputs.support, self.inputs.batch
        expand = lambda t: None if t is None else t.expand(b, *t.shape[1:])
        support = SupportBatch(expand(s.images), expand(s.keypoints), expand(s.visible), s.keypoint_texts * b, s.skeletons * b, s.category_ids * b)
        return CapeBatch(self.inputs.query, support, self.inputs.pairs)

    def available(self) -> tuple[str, ...]:
        return STAGES if self.separable else ("full",)


# -------------------------------------------------------------------- FLOPs
@contextlib.contextmanager
def _mha_fastpath(enabled: bool):
    previous = torch.backends.mha.get_fastpath_enabled()
    torch.backends.mha.set_fastpath_enabled(enabled)
    try:
        yield
    finally:
        torch.backends.mha.set_fastpath_enabled(previous)


def count_flops(fn, *args, **kwargs) -> dict:
    """FLOPs of one call (FlopCounterMode; fused MHA fast path off): total, MACs, attention share, per op.

    Example:
        >>> count_flops(nn.Linear(8, 16, bias=False), torch.zeros(4, 8))["flops"]  # 2 * 4 * 8 * 16
        1024
    """
    from torch.utils.flop_counter import FlopCounterMode

    with _mha_fastpath(False), torch.inference_mode(), FlopCounterMode(display=False) as counter:
        fn(*args, **kwargs)
    by_op = {str(op).removeprefix("aten."): int(n) for op, n in counter.get_flop_counts().get("Global", {}).items()}
    total = int(counter.get_total_flops())
    attention = sum(n for op, n in by_op.items() if any(a in op for a in ATTENTION_OPS))
    return {"flops": total, "macs": total // 2, "attention_flops": attention, "by_op": by_op}


def flop_report(method: CapeMethod, device: torch.device) -> dict:
    """FLOPs per stage at batch 1 on the reference inputs (prompt: once per category)."""
    inputs = reference_inputs(method, 1, device)
    stages = Stages(method, inputs)
    report = {}
    for stage in stages.available():
        report[stage] = count_flops(getattr(stages, stage))
    if not stages.separable:
        report["note"] = "method is not separable: only the full per-pair forward is counted"
    report["counter"] = (
        "torch.utils.flop_counter.FlopCounterMode; FLOPs = 2 x MACs; matmul, conv and attention kernels only "
        "(element-wise ops, norms, softmax not counted); MHA fast path off while counting"
    )
    report["reference_prompt"] = f"MP-100 category {REFERENCE_CATEGORY} (horse body), {inputs.keypoints} keypoints, {inputs.slots} slots"
    return report


# ------------------------------------------------------------------ latency
def _autocast(device: torch.device, dtype: str):
    if DTYPES[dtype] is None:
        return contextlib.nullcontext()
    return torch.autocast(device.type, dtype=DTYPES[dtype])


def _synchronize(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def time_calls(fn, device: torch.device, iters: int, warmup: int) -> dict:
    """Per-call milliseconds: CUDA events (synchronised after each call) on GPU, perf_counter on CPU."""
    first_start = time.perf_counter()
    for i in range(max(warmup, 1)):
        fn()
        if i == 0:
            _synchronize(device)
            first_ms = 1000 * (time.perf_counter() - first_start)
    _synchronize(device)
    times = []
    for _ in range(iters):
        if device.type == "cuda":
            start, end = torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True)
            start.record()
            fn()
            end.record()
            torch.cuda.synchronize(device)
            times.append(start.elapsed_time(end))
        else:
            start = time.perf_counter()
            fn()
            times.append(1000 * (time.perf_counter() - start))
    values = np.asarray(times)
    return {
        "median_ms": float(np.median(values)), "p90_ms": float(np.percentile(values, 90)), "mean_ms": float(values.mean()),
        "min_ms": float(values.min()), "iters": iters, "warmup": warmup, "first_call_ms": first_ms,
    }


def _rss_kib(field_name: str) -> int | None:
    try:
        for line in Path("/proc/self/status").read_text().splitlines():
            if line.startswith(field_name + ":"):
                return int(line.split()[1])
    except OSError:
        return None
    return None


def peak_memory(fn, device: torch.device) -> dict:
    """Peak memory of one call (see module docstring for what each device reports)."""
    if device.type == "cuda":
        _synchronize(device)
        torch.cuda.reset_peak_memory_stats(device)
        base = torch.cuda.memory_allocated(device)
        fn()
        _synchronize(device)
        peak = torch.cuda.max_memory_allocated(device)
        return {"method": "torch.cuda.max_memory_allocated", "peak_mib": peak / 2**20, "above_weights_mib": (peak - base) / 2**20}
    try:
        Path("/proc/self/clear_refs").write_text("5")  # resets VmHWM to the current RSS
    except OSError:
        return {"method": "n/a (peak RSS cannot be reset on this system)", "peak_mib": None, "above_weights_mib": None}
    before = _rss_kib("VmRSS")
    fn()
    peak = _rss_kib("VmHWM")
    if before is None or peak is None:
        return {"method": "n/a (no /proc/self/status)", "peak_mib": None, "above_weights_mib": None}
    return {"method": "CPU process peak RSS (VmHWM) increase during one call; includes allocator caching", "peak_mib": peak / 1024, "above_weights_mib": (peak - before) / 1024}


def latency_report(method: CapeMethod, device: torch.device, batches, dtypes, iters: int, warmup: int, progress=None) -> list[dict]:
    rows = []
    for dtype in dtypes:
        for batch in batches:
            inputs = reference_inputs(method, batch, device)
            with torch.inference_mode(), _autocast(device, dtype):
                stages = Stages(method, inputs)
                timings = {}
                for stage in stages.available():
                    if progress:
                        progress(f"{dtype} batch {batch}: {stage}")
                    timings[stage] = time_calls(getattr(stages, stage), device, iters, warmup)
                memory = peak_memory(stages.full, device)
            headline = timings.get("query", timings["full"])
            rows.append({
                "dtype": dtype, "batch": batch, "stages": timings,
                "latency_ms": headline["median_ms"], "p90_ms": headline["p90_ms"],
                "fps": batch * 1000.0 / headline["median_ms"] if headline["median_ms"] > 0 else None,
                "full_ms": timings["full"]["median_ms"],
                "full_fps": batch * 1000.0 / timings["full"]["median_ms"] if timings["full"]["median_ms"] > 0 else None,
                "memory": memory,
            })
    return rows


# ------------------------------------------------------------------- driver
@dataclass
class ProfileRequest:
    method: str
    config: str | None = None
    cfg_options: list[str] | None = None
    checkpoint: Path | None = None
    device: str = "cpu"
    batches: list[int] = field(default_factory=lambda: [1])
    dtypes: list[str] = field(default_factory=lambda: ["fp32"])
    compile: bool = False
    iters: int = 100
    warmup: int = 10
    flops: bool = True
    results: str | Path | None = None


def parse_int_list(value: str, flag: str) -> list[int]:
    try:
        items = [int(v) for v in str(value).split(",") if v.strip()]
    except ValueError:
        raise ConfigError(f"{flag} must be positive integers, comma separated (e.g. 1,8,32), got {value!r}") from None
    if not items or any(i < 1 for i in items):
        raise ConfigError(f"{flag} must be positive integers, comma separated (e.g. 1,8,32), got {value!r}")
    return sorted(set(items))


def parse_dtypes(value: str) -> list[str]:
    dtypes = [v.strip() for v in str(value).split(",") if v.strip()]
    bad = [d for d in dtypes if d not in DTYPES]
    if not dtypes or bad:
        raise ConfigError(f"--dtype must be a comma list of {', '.join(DTYPES)}, got {value!r}")
    return list(dict.fromkeys(dtypes))


def _compile_stages(method: CapeMethod) -> None:
    for name in ("encode_query", "encode_support", "decode"):
        setattr(method, name, torch.compile(getattr(method, name)))


def profile_path(results: Path, method: str, config_name: str, conditions: dict, compiled: bool) -> Path:
    device = "cpu" if conditions["device"] == "cpu" else "cuda-" + re.sub(r"[^A-Za-z0-9]+", "_", conditions["device_name"]).strip("_")
    return results / "profiles" / f"{method}-{config_name}" / f"{device}{'-compiled' if compiled else ''}.json"


def profile(request: ProfileRequest, log=print) -> tuple[dict, Path]:
    """Build, measure, store. Returns (record, path of the JSON under `<results>/profiles/`)."""
    from cape_bench.build import (
        build_method,
        config_hash,
        default_config,
        parse_overrides,
    )
    from cape_bench.provenance import provenance
    from cape_bench.registry import METHODS
    from cape_bench.results import results_root

    if request.iters < 1 or request.warmup < 0:
        raise ConfigError(f"--iters must be >= 1 and --warmup >= 0, got {request.iters} and {request.warmup}")
    device = resolve_device(request.device)
    canonical = METHODS.canonical(request.method)
    overrides = parse_overrides(request.cfg_options)
    weights = "checkpoint " + str(request.checkpoint) if request.checkpoint else "random init (config override random_init=True; weights do not change FLOPs or timing)"
    if request.checkpoint is None:
        overrides.setdefault("random_init", True)
    config = request.config or default_config(canonical, demo=False)
    method, resolved = build_method(canonical, config, overrides)
    if request.checkpoint is not None:
        from cape_bench.checkpoints import load_checkpoint

        load_checkpoint(method, request.checkpoint)
    method = method.eval().to(device)
    conditions = device_conditions(device)
    log(f"profiling {canonical} ({resolved['config_name']}) on {conditions['label']}; weights: {weights}")
    if device.type == "cpu" and hasattr(os, "getloadavg") and os.getloadavg()[0] > 0.5:
        log(f"note: load average {os.getloadavg()[0]:.1f} before measuring: other processes share the CPU and inflate the timings")
    params = parameter_report(method)
    flops = flop_report(method, device) if request.flops else None
    if request.compile:
        try:
            _compile_stages(method)
        except Exception as error:  # noqa: BLE001 - torch.compile raises many types
            raise CapeBenchError(f"--compile: torch.compile failed ({type(error).__name__}: {error})") from None
    try:
        latency = latency_report(method, device, request.batches, request.dtypes, request.iters, request.warmup)
    except CapeBenchError:
        raise
    except Exception as error:
        if request.compile:
            raise CapeBenchError(f"--compile: the compiled stages failed to run ({type(error).__name__}: {str(error).splitlines()[0] if str(error) else ''})") from None
        raise
    info = provenance(device)
    record = {
        "schema": SCHEMA_VERSION,
        "kind": "efficiency",
        "method": canonical,
        "config_name": resolved["config_name"],
        "config_hash": config_hash({"config": resolved, "checkpoint": str(request.checkpoint) if request.checkpoint else None}),
        "weights": weights,
        "conditions": {
            **conditions,
            "batches": request.batches, "dtypes": request.dtypes, "compile": request.compile,
            "iters": request.iters, "warmup": request.warmup,
            "timer": "CUDA events, synchronised per call" if device.type == "cuda" else "time.perf_counter per call (CPU, synchronous)",
            "input_size": method.input_size, "inputs": "pre-loaded random tensors on the device",
            "autocast": "bf16/fp16 = torch.autocast with fp32 weights",
            "torch_threads": torch.get_num_threads(),
            # Other processes on the machine skew CPU timings; the load before measuring flags it.
            "load_average_1min": os.getloadavg()[0] if hasattr(os, "getloadavg") else None,
        },
        "params": params,
        "flops": flops,
        "latency": latency,
        "provenance": info,
        "config": resolved,
    }
    path = profile_path(results_root(request.results), canonical, resolved["config_name"], conditions, request.compile)
    path.parent.mkdir(parents=True, exist_ok=True)
    temporary = path.with_suffix(".json.tmp")
    temporary.write_text(json.dumps(record, indent=1, default=str))
    os.replace(temporary, path)
    return record, path


def load_profiles(results: Path) -> list[dict]:
    records = []
    for path in sorted((Path(results) / "profiles").glob("*/*.json")):
        try:
            record = json.loads(path.read_text())
        except json.JSONDecodeError as error:
            raise ConfigError(f"{path}: not a cape-bench profile ({error})") from None
        if record.get("kind") == "efficiency":
            record["_path"] = str(path)
            records.append(record)
    return records


# ------------------------------------------------------------------ output
def _m(n: int | None) -> str:
    return "-" if n is None else f"{n / 1e6:.3f}"


def _g(n: int | None) -> str:
    return "-" if n is None else f"{n / 1e9:.4f}"


def _ms(value: float) -> str:
    return f"{value:.4g}"


def _stage_ms(stages: dict, name: str) -> str:
    return _ms(stages[name]["median_ms"]) if name in stages else "-"


def render_profile(record: dict) -> str:
    from tabulate import tabulate

    c = record["conditions"]
    lines = [
        f"{record['method']} ({record['config_name']}) | {c['label']}",
        f"weights: {record['weights']}"
        + (f"; load average before measuring: {c['load_average_1min']:.2f}" if c.get("load_average_1min") is not None and c["device"] == "cpu" else ""),
        "",
        f"parameters: total {_m(record['params']['total'])} M, trainable {_m(record['params']['trainable'])} M, frozen {_m(record['params']['frozen'])} M"
        + "  (towers: " + ", ".join(f"{k} {_m(v['total'])} M ({_m(v['frozen'])} M frozen)" for k, v in record["params"]["towers"].items() if v["total"]) + ")",
    ]
    if record["params"]["by_submodule"]:
        lines.append(tabulate(
            [[e["submodule"], e["type"], e["tower"], _m(e["total"]), _m(e["trainable"]), _m(e["frozen"])] for e in record["params"]["by_submodule"]],
            headers=["submodule", "type", "tower", "params (M)", "trainable (M)", "frozen (M)"], tablefmt="github",
        ))
    flops = record.get("flops")
    if flops:
        lines += ["", f"FLOPs at batch 1 ({flops['counter']}); prompt = once per category"]
        rows = [[stage, _g(flops[stage]["flops"]), _g(flops[stage]["macs"]), _g(flops[stage]["attention_flops"])] for stage in STAGES if stage in flops]
        lines.append(tabulate(rows, headers=["stage", "GFLOPs", "GMACs", "attention GFLOPs"], tablefmt="github", disable_numparse=True))
    rows = []
    for row in record["latency"]:
        s = row["stages"]
        memory = row["memory"]
        rows.append([
            row["dtype"], row["batch"], _stage_ms(s, "image"), _stage_ms(s, "prompt"), _stage_ms(s, "head"), _ms(row["latency_ms"]), _ms(row["p90_ms"]),
            f"{row['fps']:.4g}" if row["fps"] else "-", _ms(row["full_ms"]),
            "n/a" if memory["peak_mib"] is None else f"{memory['peak_mib']:.1f} (+{memory['above_weights_mib']:.1f})",
        ])
    memory_header = "peak MiB (+above weights)" if c["device"] == "cuda" else "peak RSS MiB (+during call)"
    lines += [
        "",
        f"latency, median over {c['iters']} calls after {c['warmup']} warm-up ({c['timer']}); query = image + head per batch, "
        "FPS = batch x 1000 / median query ms; full = prompt + image + head" + ("; torch.compile on" if c["compile"] else ""),
        tabulate(rows, headers=["dtype", "batch", "image ms", "prompt ms", "head ms", "query ms", "query p90", "FPS", "full ms", memory_header], tablefmt="github", disable_numparse=True),
        f"memory: {record['latency'][0]['memory']['method']}" if record["latency"] else "",
    ]
    return "\n".join(lines)
