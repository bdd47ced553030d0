"""``splinecam bench --ort-sweep``: ONNX Runtime's CPU session settings measured on this machine.

Each variant is one :class:`splinecam.engines.backends.options.OrtOptions` (graph optimisation level,
NCHWc layout, inter-op threads, spinning, memory pattern, arena) and an intra-op thread count, built as a
real ``onnxruntime`` backend and timed like every bench row: the same frames, interleaved frame by frame
in a rotating order (:func:`splinecam.benchmarks.runner.measure`), ``keypoints`` + ``generate`` per frame.
Speeds are ratios to the default settings measured in the same run; every variant's frames are compared
with the default's (settings must not change the pictures beyond float rounding).

    rows = run_ort_sweep(loaded, inputs, threads=2, precisions=("fp32", "int8"))
"""

from __future__ import annotations

import dataclasses
import json
import time
from pathlib import Path

from splinecam.benchmarks.results import max_abs_diff, summarise_times
from splinecam.benchmarks.runner import BackendRunner, RowSpec, measure, say
from splinecam.engines.backends.options import BackendOptions, OrtOptions

SCHEMA = "splinecam-ort-sweep/1"


def variants(threads: int) -> list[tuple[str, OrtOptions, int]]:
    """(label, settings, intra-op threads): the default first, then one change at a time."""
    base = OrtOptions()
    out = [("default", base, threads),
           ("graph optimisation extended (no layout transforms)", dataclasses.replace(base, graph_optimization="extended"), threads),
           ("graph optimisation basic", dataclasses.replace(base, graph_optimization="basic"), threads),
           ("NCHWc layout off", dataclasses.replace(base, nchwc=False), threads),
           ("spinning on", dataclasses.replace(base, spinning=True), threads),
           ("memory pattern off", dataclasses.replace(base, memory_pattern=False), threads),
           ("memory arena off", dataclasses.replace(base, cpu_arena=False), threads),
           ("inter-op 2 threads (parallel execution)", dataclasses.replace(base, inter_op_threads=2), threads)]
    if threads > 1:
        out.append((f"intra-op 1 thread (of {threads})", base, 1))
    return out


def run_ort_sweep(loaded, inputs, threads: int, precisions=("fp32",), warmup: int = 2,
                  calibration: str | None = None) -> list[dict]:
    """Measure every variant × precision on ``inputs`` (benchmarks.inputs.BenchInputs); one dict per variant."""
    runners, meta = [], []
    for precision in precisions:
        for label, settings, n in variants(threads):
            spec = RowSpec("onnxruntime", precision, "cpu")
            options = BackendOptions(threads=n, ort=settings, calibration=calibration,
                                     progress=lambda msg: say(f"  onnxruntime {precision}: {msg}"))
            t0 = time.perf_counter()
            try:
                runner = BackendRunner(spec, loaded, options)
                runner.setup(inputs.source, inputs.frames[0])
            except Exception as err:  # a setting this build rejects: reported, the sweep goes on
                meta.append({"precision": precision, "variant": label, "settings": settings.label(),
                             "intra_op_threads": n, "status": "failed",
                             "reason": (str(err).strip().splitlines() or [type(err).__name__])[0][:200]})
                continue
            say(f"  {precision} {label}: ready in {time.perf_counter() - t0:.1f} s")
            runners.append(runner)
            meta.append({"precision": precision, "variant": label, "settings": settings.label(), "intra_op_threads": n,
                         "status": "ok", "setup_s": round(time.perf_counter() - t0, 2), "runner": runner})
    measured = measure(runners, inputs.frames, warmup)
    by_runner = dict(zip(map(id, runners), measured))
    defaults = {m["precision"]: by_runner[id(m["runner"])] for m in meta
                if m.get("runner") is not None and m["variant"] == "default"}
    rows = []
    for m in meta:
        runner = m.pop("runner", None)
        if runner is None:
            rows.append(m)
            continue
        result = by_runner[id(runner)]
        runner.close()
        if result.error:
            rows.append({**m, "status": "failed", "reason": result.error})
            continue
        median, p90, _ = summarise_times(result.ms)
        ref = defaults.get(m["precision"])
        base = summarise_times(ref.ms)[0] if ref is not None and not ref.error else None
        rows.append({**m, "ms_per_frame_median": round(median, 2), "ms_per_frame_p90": round(p90, 2),
                     "stages_ms": result.stage_means(),
                     "speedup_vs_default": round(base / median, 3) if base else None,
                     "max_abs_diff_vs_default": max_abs_diff(result.outputs, ref.outputs) if ref else None})
    return rows


def format_sweep(rows: list[dict]) -> str:
    lines = [f"{'precision':9s} {'settings':52s} {'ms/frame':>9s} {'× default':>9s} {'Δ px':>5s}"]
    for r in rows:
        if r.get("status") != "ok":
            lines.append(f"{r['precision']:9s} {r['variant'][:52]:52s} {r['status']}: {r.get('reason', '')}")
            continue
        lines.append(f"{r['precision']:9s} {r['variant'][:52]:52s} {r['ms_per_frame_median']:9.1f} "
                     f"{r['speedup_vs_default'] or 0:9.2f} {r['max_abs_diff_vs_default'] or 0:5d}")
    return "\n".join(lines)


def write_sweep(path: str | Path, rows: list[dict], header: dict) -> Path:
    p = Path(path)
    p.parent.mkdir(parents=True, exist_ok=True)
    p.write_text(json.dumps({"schema": SCHEMA, **header, "rows": rows}, indent=2) + "\n")
    return p
