"""``splinecam bench``: FPS per device, per backend and precision, per stage — against the official demo.

    result = run_bench(BenchOptions(config="vox-256", frames=10))
    result.write("b.json")

Model: ``--checkpoint`` (with ``--config`` if it needs one); ``--config`` alone: random weights with
perturbed norm layers (``splinecam.engines.tpsmm.random_weights.perturbed_random_model``, as golden-small was
made) so reduced-precision PSNR means something; neither: the bundled weights.

Rows: the baseline (the official demo's per-frame work, :class:`splinecam.benchmarks.runner.OfficialBaseline`;
for FOMM checkpoints the official FOMM demo's, :class:`splinecam.benchmarks.fomm_runner.FommOfficialBaseline`)
and one row per backend × precision that exists somewhere (torch fp32/bf16/fp16, onnxruntime
fp32/fp16/int8, openvino fp32/bf16/int8, tensorrt fp16/fp32; asking for both ``--backends`` and ``--precisions`` gives their full
cross product). A combination this machine cannot run is a row with status ``unavailable`` and the
one-line reason, not a crash; a backend that breaks while running is ``failed``, the rest goes on.
"""

from __future__ import annotations

import os
import time
import warnings
from dataclasses import dataclass, field

from splinecam.benchmarks.conditions import conditions
from splinecam.benchmarks.device_info import collect_device_info
from splinecam.benchmarks.results import (STATUS_FAILED, STATUS_UNAVAILABLE, BenchResult, ModelInfo, RowResult,
                                fastest_at_floor, max_abs_diff, sequence_psnr, summarise_times)
from splinecam.benchmarks.runner import (BackendRunner, OfficialBaseline, RowSpec, Runner, large_motion_keypoints, measure,
                                        say, unavailable_reason)
from splinecam.engines.errors import BackendUnavailableError, CheckpointError
from splinecam.engines.progress import Progress
from splinecam.engines.quality import PSNR_FLOOR_DB, psnr
from splinecam.engines.tpsmm.checkpoint import LoadedModel



@dataclass
class BenchOptions:
    """What ``splinecam bench`` was asked (see benchmarks/cli.py for the flags)."""

    checkpoint: str | None = None
    config: str | None = None
    backends: list[str] | None = None
    precisions: list[str] | None = None
    device: str = "auto"
    frames: int = 30
    warmup: int = 3
    threads: int | None = None
    compile: bool = True                 # torch bf16 CPU rows compiled by inductor (--no-compile: eager)
    calibration: str | None = None       # int8 rows: the calibration video (default: the bundled clip)
    driving: str | None = None
    source: str | None = None
    seed: int = 0
    note: str = ""
    command: str = ""
    pipeline: str | None = None
    pipeline_frames: int | None = None
    pipeline_unpaced: bool = False
    pipeline_no_record: bool = False
    output_size: tuple[int, int] = (1280, 720)
    remote: tuple[str, int] | None = None   # --pipeline over `splinecam worker` at (host, port)
    token: str = ""
    remote_codec: str = "jpeg"
    remote_quality: int = 90
    extra: dict = field(default_factory=dict)


# ----------------------------------------------------------------------------- model


def load_bench_model(opts: BenchOptions) -> tuple[LoadedModel, str]:
    """(model, how it was obtained) from --checkpoint / --config / the bundled weights.

    Without either and without bundled weights in this install (before the first training run
    has produced them), random cpu-256 weights stand in, with a warning: timings are valid,
    pictures are not.
    """
    from splinecam.engines.model_options import default_checkpoint
    from splinecam.engines.tpsmm.checkpoint import load_checkpoint
    from splinecam.engines.tpsmm.random_weights import perturbed_random_model

    if opts.checkpoint:
        loaded = load_checkpoint(opts.checkpoint, opts.config)
        return loaded, f"checkpoint {loaded.path}"
    if opts.config:
        return perturbed_random_model(opts.config, opts.seed), f"random weights, norm layers perturbed (seed {opts.seed})"
    try:
        path = default_checkpoint()
    except CheckpointError as err:
        say(f"splinecam: warning: {err}; benchmarking random cpu-256 weights instead (speed is valid, "
            f"images are not)")
        return perturbed_random_model("cpu-256", opts.seed), \
            f"random cpu-256 weights (bundled weights missing), seed {opts.seed}"
    loaded = load_checkpoint(path)
    return loaded, f"bundled weights {path.name}"


def model_info(loaded: LoadedModel, source: str) -> ModelInfo:
    """Parameters and FLOPs (FlopCounterMode over keypoints + dense motion + inpainting, one frame)."""
    import torch

    from splinecam.engines.family import family_of
    from splinecam.engines.tpsmm.flops import count_network_flops, count_parameters

    model = loaded.model
    if next(model.parameters()).device.type != "cpu":  # pragma: no cover - models load on the CPU
        model = model.cpu()
    count = count_network_flops
    if family_of(loaded).name == "fomm":
        from splinecam.engines.fomm.flops import count_fomm_flops as count
    with torch.inference_mode():
        flops = count(model)
    by_net = {k: round(v, 3) for k, v in flops.to_dict().items() if k in
              ("kp_detector", "bg_predictor", "dense_motion", "inpainting_encoder", "inpainting_decoder")}
    return ModelInfo(config=loaded.config.name, source=source, model_hash=loaded.model_hash,
                     image_size=loaded.config.image_size, num_kp=loaded.config.num_kp,
                     parameters=count_parameters(model), gflops_per_frame=round(flops.official_frame, 3),
                     gflops_per_frame_cached=round(flops.cached_frame, 3), gflops_by_network=by_net)


# ----------------------------------------------------------------------------- rows


def _device_for(backend: str, device: str) -> str:
    """The device a backend's row runs on: ``device`` if given, else cuda when present and the engine runs
    there, else the engine's first device (the registry's order)."""
    import torch

    from splinecam.engines.backends import REGISTRY

    if device != "auto":
        return device
    devices = REGISTRY[backend].devices()
    if "cuda" in devices and torch.cuda.is_available():
        return "cuda"
    return "cpu" if "cpu" in devices else devices[0]


def row_specs(backends: list[str] | None, precisions: list[str] | None, device: str = "auto") -> list[RowSpec]:
    """The backend × precision rows to run, in a fixed order.

    By default the combinations the backend registry lists for some device; when both lists are given,
    their full cross product (impossible ones then show as unavailable).
    """
    from splinecam.engines.backends import BACKENDS, PRECISIONS, REGISTRY

    explicit = backends is not None and precisions is not None
    bs = backends or list(BACKENDS)  # the registry's order
    ps = precisions or list(PRECISIONS)
    specs = []
    for b in bs:
        exists = {p for precs in REGISTRY[b].precisions.values() for p in precs}
        for p in ps:
            if explicit or p in exists:
                specs.append(RowSpec(b, p, _device_for(b, device)))
    return specs


def build_runner(spec: RowSpec, loaded: LoadedModel, threads: int | None,
                 compile_bf16: bool = True, calibration: str | None = None) -> tuple[Runner | None, RowResult]:
    """A runner for a row, or None and the row marked unavailable / failed (one-line reason)."""
    from splinecam.engines.backends import BackendOptions, resolve_choice

    row = RowResult(spec.backend, spec.precision, spec.device)
    t0 = time.perf_counter()
    try:
        resolve_choice(spec.backend, spec.device, spec.precision)
        options = BackendOptions(progress=lambda msg: say(f"  {spec.backend} {spec.precision}: {msg}"),
                                 threads=threads if spec.backend == "onnxruntime" else None, compile=compile_bf16,
                                 calibration=calibration)
        with warnings.catch_warnings(record=True) as caught:
            warnings.simplefilter("always")
            runner = BackendRunner(spec, loaded, options)
        for w in caught:
            if issubclass(w.category, (ResourceWarning, DeprecationWarning)):
                continue
            say(f"  {spec.backend} {spec.precision}: warning: {w.message}")
    except BackendUnavailableError as err:
        row.status, row.reason = STATUS_UNAVAILABLE, unavailable_reason(spec.backend, err)
        return None, row
    except Exception as err:  # a broken backend must not take the other rows down
        row.status, row.reason = STATUS_FAILED, f"{type(err).__name__}: {(str(err).strip().splitlines() or [''])[0][:200]}"
        return None, row
    row.variant = runner.variant
    row.setup_s = time.perf_counter() - t0
    return runner, row


def official_baseline(loaded: LoadedModel, device: str) -> OfficialBaseline:
    """The official demo's per-frame work for the loaded model's family (TPSMM's or FOMM's demo.py)."""
    from splinecam.engines.family import family_of

    if family_of(loaded).name == "fomm":
        from splinecam.benchmarks.fomm_runner import FommOfficialBaseline

        return FommOfficialBaseline(loaded, device)
    return OfficialBaseline(loaded, device)


# ----------------------------------------------------------------------------- the run


def _run_remote_pipeline(opts: BenchOptions, threads: int) -> BenchResult:
    """--pipeline CLIP --remote HOST:PORT: the live pipeline here, the networks on the worker (its model)."""
    from splinecam.benchmarks.pipeline import run_remote_pipeline

    started = time.strftime("%Y-%m-%dT%H:%M:%S%z")
    before = conditions()
    device = collect_device_info(threads)
    host, port = opts.remote
    say(f"splinecam bench: {device.label} (client); networks on the worker at {host}:{port}")
    result = BenchResult(device=device.to_dict(), model=None, inputs={"description": f"{opts.pipeline} as the camera"},
                         created=started, command=opts.command, note=opts.note,
                         settings={"threads": threads, "pipeline_frames": opts.pipeline_frames,
                                   "paced": not opts.pipeline_unpaced, "mode": "relative",
                                   "output_size": f"{opts.output_size[0]}x{opts.output_size[1]}",
                                   "remote": f"{host}:{port}", "remote_codec": opts.remote_codec,
                                   "remote_quality": opts.remote_quality})
    result.pipeline = [run_remote_pipeline(opts)]
    result.conditions = {"start": before, "end": conditions()}
    return result


def run_bench(opts: BenchOptions) -> BenchResult:
    """Measure every row on the same frames, interleaved; return the typed result."""
    import torch

    from splinecam.benchmarks.inputs import load_inputs

    threads = opts.threads or os.cpu_count() or 1
    torch.set_num_threads(threads)
    if opts.pipeline and opts.remote:
        return _run_remote_pipeline(opts, threads)
    loaded, model_source = load_bench_model(opts)
    started = time.strftime("%Y-%m-%dT%H:%M:%S%z")
    before = conditions()
    device = collect_device_info(threads)
    say(f"splinecam bench: {device.label}; {loaded.config.name} ({model_source}); {threads} threads")
    info = model_info(loaded, model_source)
    say(f"  {info.parameters['total'] / 1e6:.1f} M parameters, {info.gflops_per_frame:.1f} GFLOPs per frame "
        f"(official demo), {info.gflops_per_frame_cached:.1f} with the source cached")
    result = BenchResult(device=device.to_dict(), model=info, inputs={}, created=started, command=opts.command,
                         note=opts.note,
                         settings={"frames": opts.frames, "warmup": opts.warmup, "threads": threads,
                                   "mode": "relative", "interleaved": True, "device": opts.device})
    if opts.pipeline:
        from splinecam.benchmarks.pipeline import run_pipelines

        result.settings = {"threads": threads, "device": opts.device, "pipeline_frames": opts.pipeline_frames,
                           "paced": not opts.pipeline_unpaced, "output_size": f"{opts.output_size[0]}x{opts.output_size[1]}",
                           "mode": "relative"}
        result.pipeline = run_pipelines(opts, loaded)
        result.inputs = {"description": f"{opts.pipeline} as the camera"}
        result.conditions = {"start": before, "end": conditions()}
        return result

    inputs = load_inputs(loaded.config.image_size, opts.frames, opts.driving, opts.source)
    result.inputs = inputs.to_dict()
    say(f"  inputs: {inputs.description}, {len(inputs.frames)} frames (+{opts.warmup} warm-up) per row")

    baseline_device = _device_for("torch", opts.device)
    runners: list[Runner] = []
    rows: list[RowResult] = []
    t0 = time.perf_counter()
    base = official_baseline(loaded, baseline_device)
    base.setup(inputs.source, inputs.frames[0])
    base_row = RowResult(base.spec.backend, "fp32", baseline_device, variant=base.variant, baseline=True,
                         setup_s=time.perf_counter() - t0)
    runners.append(base)
    rows.append(base_row)
    for spec in row_specs(opts.backends, opts.precisions, opts.device):
        say(f"  setting up {spec.backend} {spec.precision} on {spec.device} …")
        runner, row = build_runner(spec, loaded, threads, opts.compile, opts.calibration)
        if runner is not None:
            try:
                t_setup = time.perf_counter()
                runner.setup(inputs.source, inputs.frames[0])
                row.setup_s = (row.setup_s or 0.0) + time.perf_counter() - t_setup
                runners.append(runner)
            except Exception as err:
                row.status = STATUS_FAILED
                row.reason = f"{type(err).__name__}: {(str(err).strip().splitlines() or [''])[0][:200]}"
                row.variant = runner.variant
                runner = None
        if runner is None:
            say(f"    {row.status}: {row.reason}")
        rows.append(row)

    active_rows = [r for r in rows if r.ok]
    total = len(runners) * (opts.warmup + len(inputs.frames))
    progress = Progress("bench", total)
    try:
        measured = measure(runners, inputs.frames, opts.warmup, tick=lambda label: progress.update(1, label))
    finally:
        progress.close()

    ref = measured[0].outputs
    if measured[0].error or not ref:
        from splinecam.engines.errors import SplinecamError

        raise SplinecamError(f"the baseline failed: {measured[0].error}")
    kp_large = large_motion_keypoints(base.source_keypoints(), opts.seed)
    ref_large = base.generate_kp(kp_large)
    for row, m, runner in zip(active_rows, measured, runners):
        if m.error:
            row.status, row.reason = STATUS_FAILED, m.error
            continue
        worst = None
        if row.precision != "fp32":
            worst = min(psnr(a, b) for a, b in zip(m.outputs, ref))
            try:
                large = sequence_psnr([runner.generate_kp(kp_large)], [ref_large])
                row.psnr_large_motion_vs_fp32 = round(large, 2)
                worst = min(worst, large)
            except Exception as err:  # quality extra: never fails the row
                say(f"  {row.label}: large-motion frame failed ({err})")
        row.frames = len(m.ms)
        row.ms_per_frame_median, row.ms_per_frame_p90, row.ms_per_frame_mean = summarise_times(m.ms)
        row.fps = 1000.0 / row.ms_per_frame_median
        row.stages_ms = m.stage_means()
        row.max_abs_diff_vs_fp32 = max_abs_diff(m.outputs, ref)
        row.psnr_vs_fp32 = None if row.precision == "fp32" else round(sequence_psnr(m.outputs, ref), 2)
        row.psnr_min_vs_fp32 = None if worst is None else round(worst, 2)
        row.meets_psnr_floor = None if row.baseline else (worst is None or worst >= PSNR_FLOOR_DB)
    for r in runners[1:]:
        r.close()
    base_ms = base_row.ms_per_frame_median
    for row in rows:
        if row.ok and row.ms_per_frame_median:
            row.speedup_vs_baseline = round(base_ms / row.ms_per_frame_median, 3)
            for k in ("ms_per_frame_median", "ms_per_frame_p90", "ms_per_frame_mean"):
                setattr(row, k, round(getattr(row, k), 2))
            row.fps = round(row.fps, 3)
        if row.setup_s is not None:
            row.setup_s = round(row.setup_s, 2)
    result.results = rows
    result.fastest = fastest_at_floor(rows)
    result.conditions = {"start": before, "end": conditions(),
                         "duration_s": round(time.perf_counter() - t0, 1)}
    return result
