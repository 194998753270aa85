"""``python -m snapflow_ros bench``: per-stage latency of one action chunk, N-step vs 1-NFE.

Stages per chunk: ``preprocess`` (normalise, tokenise, to device), ``prefix`` (images +
language + state through the VLM into the KV cache), ``expert`` (one action-expert pass; N of
them for N steps), ``postprocess`` (unnormalise, to CPU); ``e2e`` is their sum. A CUDA-graph
engine replays prefix + expert passes + unnormalisation as one ``step`` (its prefix/expert
columns are empty). Variants (engine × step count) are measured interleaved (round-robin over
repetitions), so their ratios come from one run on the same machine state. Absolute CPU times
depend on the machine; the ratios are what to compare.

``--engine`` (policies/engine.py): auto (graph on CUDA, eager on CPU), eager, static, compile,
graph. ``--compare`` times eager and the engine (auto: graph on CUDA, compile on CPU) at every
``--num-steps`` count in one run: eager-10, eager-1, engine-10, engine-1, and reports each row's
e2e p50 against the eager row with the same step count (``e2e_p50_vs_eager``).

    python -m snapflow_ros bench --policy smolvla-tiny --num-steps 10 1 --json
    python -m snapflow_ros bench --policy smolvla-full --num-steps 10 1 --reps 3
    python -m snapflow_ros bench --policy pi05-full --num-steps 10 1 --cpu-threads 2
    python -m snapflow_ros bench --policy path/to/snapflow_checkpoint --device cuda
    python -m snapflow_ros bench --cpu-threads 2   # default 0 = auto: cores in the mask - 1
    python -m snapflow_ros bench --policy smolvla-full --device cuda --compare  # eager vs graph
    python -m snapflow_ros bench --policy smolvla-tiny --engine static --compare --json
    python -m snapflow_ros bench --node            # the ROS node as deployed (nodes/node_bench)
    python -m snapflow_ros bench --node --matrix   # 224x224 and 640x480 cameras x load 0 and 1
"""

from __future__ import annotations

import json
import logging
import platform
import sys
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import torch

from snapflow_ros import config_cli
from snapflow_ros.apps.node_bench import normalise_size
from snapflow_ros.cpu_threads import apply_cpu_threads, available_cores
from snapflow_ros.policies.device import resolve_device, resolve_dtype
from snapflow_ros.policies.engine import ENGINES, make_engine, resolve_engine
from snapflow_ros.policies.factory import make_any
from snapflow_ros.policies.tiny import random_observation
from snapflow_ros.timing import StageTimer, percentiles

log = logging.getLogger("snapflow_ros.apps.bench")
#: Cores auto leaves free: the policy node's own ROS thread, as deployed.
BENCH_RESERVED = 1


@dataclass
class BenchConfig:
    """Per-stage latency of one action chunk, N steps vs 1; with --node, the ROS policy_node as
    deployed (always JSON on stdout and a table on stderr; apps/node_bench.py)."""

    # built-in (smolvla-tiny, pi0-tiny, pi05-tiny; real shapes: smolvla-full, pi0-full,
    # pi05-full), checkpoint dir or hub id
    policy: str = "smolvla-tiny"
    num_steps: list[int] = field(default_factory=lambda: [10, 1])  # step counts to compare
    # snap or euler (null: the checkpoint's: snap for SnapFlow, euler for teachers)
    sampler: str | None = None
    reps: int | None = None  # timed chunks per step count (null: 20; 3 for the *-full built-ins)
    warmup: int = 2  # untimed chunks per step count first
    batch_size: int = 1  # observations per chunk
    device: str = "auto"  # auto, cpu, cuda, cuda:N
    dtype: str = "auto"  # auto (bf16 on CUDA), float32, bfloat16
    # inference engine: auto (graph on CUDA, eager on CPU), eager, static, compile, graph
    engine: str = "auto"
    # eager and the engine (auto: graph on CUDA, compile on CPU) side by side, interleaved
    compare: bool = False
    # torch/OpenMP CPU threads: 0 = auto (cores in the affinity mask minus 1, at least 1)
    cpu_threads: int = 0
    seed: int = 0  # seed of the random observation and noise
    json: bool = False  # print one JSON object on stdout
    # -- --node: camera stamp -> chunk latency, control tick period, model time in the node vs
    # standalone, CPU of node + inference process
    node: bool = False
    seconds: float = 30.0  # measured window after the warm-up (under 30 needs --quick)
    warmup_seconds: float = 5.0  # inputs flow this long before the window starts
    idle_seconds: float = 5.0  # CPU with no inputs after the window (0 = skip)
    rate: float = 50.0  # command rate in Hz
    # published camera frames WIDTHxHEIGHT, e.g. 224x224 or 640x480 (the node resizes to the
    # policy's 224x224)
    camera_size: str = "224x224"
    load: int = 0  # N busy processes for the whole run
    sizes: list[str] | None = None  # several camera sizes (overrides --camera-size)
    loads: list[int] | None = None  # several loads (overrides --load)
    matrix: bool = False  # --sizes 224x224 640x480 --loads 0 1 (with load-vs-quiet flags)
    # pin the node's inference process (and the standalone timing) to these CPU ids (the
    # node's inference_cpus; empty: not pinned)
    inference_cpus: list[int] = field(default_factory=list)
    n_action_steps: int = 10  # chunk steps executed per chunk
    # the node's replan_lead_steps: chunk steps left when the next chunk is requested (0: auto,
    # from the measured latency)
    replan_lead_steps: int = 0
    # the node's overrun_steps: steps past n_action_steps while the next chunk is late (-1: as
    # many as n_action_steps, 0: none)
    overrun_steps: int = -1
    standalone_reps: int = 50  # timed chunks of the standalone model timing
    quick: bool = False  # allow --seconds under 30 (smoke tests; numbers not meaningful)

    def __post_init__(self) -> None:
        if not self.num_steps or any(n < 1 for n in self.num_steps):
            raise ValueError(f"num_steps must be >= 1, got {self.num_steps}")
        if self.sampler not in (None, "snap", "euler"):
            raise ValueError(f"sampler must be snap, euler or null, got {self.sampler!r}")
        if self.cpu_threads < 0:
            raise ValueError(f"cpu_threads must be >= 0 (0 = auto), got {self.cpu_threads}")
        if self.warmup < 0 or self.batch_size < 1 or (self.reps is not None and self.reps < 1):
            raise ValueError("warmup must be >= 0, batch_size and reps >= 1")
        if self.engine not in ENGINES:
            raise ValueError(f"unknown engine {self.engine!r}; choose one of {', '.join(ENGINES)}")
        if self.compare and self.engine == "eager":
            raise ValueError("--compare times eager against an engine: give --engine static, "
                             "compile, graph or auto")
        self.camera_size = normalise_size(self.camera_size)
        if self.sizes is not None:
            self.sizes = [normalise_size(size) for size in self.sizes]


def _one_chunk(loaded: Any, obs: dict[str, Any], num_steps: int, sampler: str | None,
               noise: torch.Tensor, timer: StageTimer) -> None:
    """Eager at batch > 1: lerobot's processors on batched tensors."""
    policy = loaded.policy
    with timer.stage("preprocess"):
        batch = loaded.preprocessor(dict(obs)) if loaded.preprocessor else obs
    actions = policy.predict_action_chunk(
        batch, noise=noise.to(policy.device), num_steps=num_steps, sampler=sampler, timer=timer
    )
    with timer.stage("postprocess"):
        if loaded.postprocessor:
            actions = loaded.postprocessor(actions)


@dataclass
class _Variant:
    """One timed configuration: an engine at a step count; ``run(timer)`` makes one chunk."""

    engine: str
    num_steps: int
    run: Callable[[StageTimer], Any]


def _engine_names(args: BenchConfig, device: str) -> list[str]:
    """The engines to time: ``--engine``, or eager and the engine with ``--compare``."""
    if not args.compare:
        return [args.engine]
    if args.engine == "auto":  # the fastest candidate: a graph on CUDA (auto: static if the
        # capture fails, with a warning), compiled on CPU
        return ["eager", "auto" if torch.device(device).type == "cuda" else "compile"]
    return ["eager", resolve_engine(args.engine, device)]


def _numpy_inputs(obs: dict[str, Any], image_keys: list[str]) -> tuple[dict[str, Any], Any]:
    """The observation as the node passes it: (H, W, 3) uint8 images by camera, state (S,)."""
    images = {key.removeprefix("observation.images."):
              obs[key].permute(1, 2, 0).mul(255).round().to(torch.uint8).numpy()
              for key in image_keys}
    return images, obs["observation.state"].numpy()


def _variants(loaded: Any, policy: Any, obs: dict[str, Any], noise: torch.Tensor,
              args: BenchConfig, device: str) -> tuple[list[_Variant], dict[str, Any]]:
    """Build and prepare each engine (compile, capture: timed as ``prepare_s``)."""
    names = _engine_names(args, device)
    task = obs["task"] if args.batch_size == 1 else obs["task"][0]
    if args.batch_size == 1:
        images, state = _numpy_inputs(obs, policy.image_keys)
    else:  # eager only (checked in run): blank images of the policy's size for the warm-up
        images = {k.removeprefix("observation.images."): obs[k][0].permute(1, 2, 0).numpy()
                  for k in policy.image_keys}
        state = None
    variants, engines = [], {}
    for name in names:
        engine = make_engine(name, loaded, policy, num_steps=args.num_steps[0],
                             sampler=args.sampler)
        t0 = time.perf_counter()
        engine.prepare({n: im.shape[:2] for n, im in images.items()}, args.warmup, task)
        engine.prepare_steps(args.num_steps)  # a graph engine captures each count here
        engines[engine.name] = {"requested": name, "prepare_s": round(time.perf_counter() - t0, 2)}
        for n in args.num_steps:
            if args.batch_size > 1:
                def run(timer: StageTimer, n: int = n) -> Any:
                    return _one_chunk(loaded, obs, n, args.sampler, noise, timer)
            else:
                def run(timer: StageTimer, n: int = n, engine: Any = engine) -> Any:
                    engine.set_num_steps(n)
                    return engine.predict(images, state, task, noise, timer)
            variants.append(_Variant(engine.name, n, run))
    return variants, engines


def run(args: BenchConfig) -> dict[str, Any]:
    """Measure and return the report (see module docstring)."""
    threads = apply_cpu_threads(args.cpu_threads, reserved=BENCH_RESERVED)
    device = resolve_device(args.device)
    dtype = resolve_dtype(args.dtype, device)
    for name in _engine_names(args, device):
        # a graph on a CPU, a static engine at batch > 1: say so before building the model
        if resolve_engine(name, device) != "eager" and args.batch_size > 1:
            raise ValueError(f"the static engines run batch 1; use --engine eager for "
                             f"--batch-size {args.batch_size}")
    reps = args.reps or (3 if args.policy.endswith("-full") else 20)
    torch.manual_seed(args.seed)

    t0 = time.perf_counter()
    loaded = make_any(args.policy, device=device)
    policy = loaded.policy.to_runtime(device, dtype)
    build_s = time.perf_counter() - t0
    log.info("built %s in %.1f s on %s/%s", args.policy, build_s, device, dtype)

    gen = torch.Generator().manual_seed(args.seed)
    obs = random_observation(policy.config, generator=gen)
    if args.batch_size > 1:
        obs = {k: (v.unsqueeze(0).expand(args.batch_size, *v.shape).clone()
                   if torch.is_tensor(v) else [v] * args.batch_size) for k, v in obs.items()}
    noise = policy.noise_like(args.batch_size, gen).cpu()
    sync = torch.cuda.synchronize if torch.device(device).type == "cuda" else None

    variants, engines = _variants(loaded, policy, obs, noise, args, device)
    results = _rows(_time_variants(variants, args.warmup, reps, sync), reps)
    cfg = policy.config
    return {
        "model": args.policy,
        "policy_type": policy.policy_type,
        "snapflow_checkpoint": loaded.is_snapflow,
        "sampler": args.sampler or policy.sampler,
        "params": sum(p.numel() for p in policy.parameters()),
        "phi_params": sum(p.numel() for p in policy.phi.parameters()),
        "device": device,
        "device_name": (torch.cuda.get_device_name(torch.device(device))
                        if sync else platform.processor() or platform.machine()),
        "dtype": str(dtype).replace("torch.", ""),
        "engine": args.engine,
        "compare": args.compare,
        "engines": engines,  # resolved name → requested name, prepare (compile/capture) seconds
        "torch": torch.__version__,
        "threads": threads,  # resolved --cpu-threads (torch intra-op threads)
        "cpu_threads_requested": args.cpu_threads,  # 0 = auto
        "cores_available": available_cores(),
        "batch_size": args.batch_size,
        "cameras": len(policy.image_keys),
        "image_shape": list(cfg.image_features[policy.image_keys[0]].shape),
        "resize_to": list(getattr(cfg, "resize_imgs_with_padding", None) or []),
        "chunk_size": policy.chunk_size,
        "action_dim": policy.action_dim,
        "reps": reps,
        "warmup": args.warmup,
        "build_s": round(build_s, 2),
        "results": results,
    }


STAGES = ("preprocess", "prefix", "step", "postprocess")


def _time_variants(variants: list[_Variant], warmup: int, reps: int,
                   sync: Any) -> dict[tuple[str, int], dict[str, list[float]]]:
    """Warm-up, then ``reps`` chunks per variant, interleaved round-robin (the variants share
    the machine's state). Per variant: per-chunk seconds of each stage and e2e; ``expert`` per
    pass; ``passes`` per chunk. The engine's on-device unnormalisation counts as postprocess."""
    for variant in variants:
        for _ in range(warmup):
            variant.run(StageTimer(sync=sync))
    out: dict[tuple[str, int], dict[str, list[float]]] = {
        (v.engine, v.num_steps): {k: [] for k in ("e2e", "expert", "passes", *STAGES)}
        for v in variants}
    for _ in range(reps):
        for variant in variants:
            timer = StageTimer(sync=sync)
            variant.run(timer)
            d, rec = timer.durations, out[(variant.engine, variant.num_steps)]
            rec["e2e"].append(sum(sum(v) for v in d.values()))
            for stage in STAGES:
                names = ("unnormalise", "postprocess") if stage == "postprocess" else (stage,)
                if any(name in d for name in names):
                    rec[stage].append(sum(sum(d.get(name, ())) for name in names))
            rec["expert"].extend(d.get("expert", ()))
            rec["passes"].append(len(d.get("expert", ())))
    return out


def _rows(timed: dict[tuple[str, int], dict[str, list[float]]],
          reps: int) -> list[dict[str, Any]]:
    """One row per (engine, step count): percentiles (ms) per stage (None: the stage is not
    separate, e.g. prefix inside a CUDA graph), e2e p50 against 1 step of the same engine and
    against eager at the same step count."""
    results = []
    for (engine, n), rec in timed.items():
        row: dict[str, Any] = {"engine": engine, "num_steps": n,
                               "expert_passes_per_chunk": max(rec["passes"], default=0)}
        for stage in ("e2e", "preprocess", "prefix", "expert", "step", "postprocess"):
            stats = percentiles(rec[stage]) if rec[stage] else {"p50": None, "p99": None}
            for key, value in stats.items():
                row[f"{stage}_ms_{key}"] = None if value is None else round(value * 1e3, 4)
        results.append(row)
    by_key = {(r["engine"], r["num_steps"]): r for r in results}
    for row in results:
        base = by_key.get((row["engine"], 1))
        if base:
            row["e2e_p50_vs_1_step"] = round(row["e2e_ms_p50"] / base["e2e_ms_p50"], 3)
        eager = by_key.get(("eager", row["num_steps"]))
        if eager and len({r["engine"] for r in results}) > 1:
            row["e2e_p50_vs_eager"] = round(row["e2e_ms_p50"] / eager["e2e_ms_p50"], 3)
    return results


def _ms(value: float | None, width: int, digits: int = 2) -> str:
    return f"{'-':>{width}}  " if value is None else f"{value:>{width}.{digits}f}ms"


def _ratio(value: float | None) -> str:
    return "-" if value is None else f"{value:.2f}x"


def _table(report: dict[str, Any]) -> str:
    lines = [
        f"{report['model']} ({report['params'] / 1e6:.2f} M params) on {report['device']} "
        f"{report['dtype']}, {report['threads']} CPU threads, {report['cameras']} cameras, "
        f"chunk {report['chunk_size']}, {report['reps']} reps",
        f"{'engine':>8} {'steps':>5} {'e2e p50':>10} {'e2e p99':>10} {'prefix':>9} "
        f"{'expert/pass':>12} {'step':>9} {'pre':>7} {'post':>7} {'vs 1-step':>9} "
        f"{'vs eager':>8}",
    ]
    for r in report["results"]:
        lines.append(
            f"{r['engine']:>8} {r['num_steps']:>5} {_ms(r['e2e_ms_p50'], 8)} "
            f"{_ms(r['e2e_ms_p99'], 8)} {_ms(r['prefix_ms_p50'], 7)} "
            f"{_ms(r['expert_ms_p50'], 10, 3)} {_ms(r['step_ms_p50'], 7)} "
            f"{_ms(r['preprocess_ms_p50'], 5)} {_ms(r['postprocess_ms_p50'], 5)} "
            f"{_ratio(r.get('e2e_p50_vs_1_step')):>9} {_ratio(r.get('e2e_p50_vs_eager')):>8}"
        )
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    args = config_cli.from_command_line(BenchConfig, argv, prog="snapflow_ros bench",
                                        short={"--threads": "--cpu_threads"})
    logging.basicConfig(level=logging.INFO, format="[bench] %(message)s", stream=sys.stderr,
                        force=True)
    if args.node:
        from snapflow_ros.apps.node_bench import main_node_bench

        return main_node_bench(args)
    from snapflow_ros.policies import CheckpointError

    try:
        report = run(args)
    except (CheckpointError, ValueError) as err:  # a bad --policy or --device: say which
        print(f"snapflow_ros bench: error: {err}", file=sys.stderr)  # noqa: T201
        return 2
    print(json.dumps(report, indent=2) if args.json else _table(report))  # noqa: T201
    return 0


if __name__ == "__main__":
    sys.exit(main())
