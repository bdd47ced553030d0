"""Typed results of ``splinecam bench`` and their JSON form (schema ``splinecam-bench/1``).

    {"schema": "splinecam-bench/1", "created", "command", "note",
     "device":  DeviceInfo (CPU model and cores, GPU, compute capability, driver / CUDA / TensorRT /
                ONNX Runtime / torch versions; null where absent),
     "model":   ModelInfo (config, parameters, GFLOPs per frame …),
     "inputs":  {"description", "frames", "size"},
     "settings": {"frames", "warmup", "threads", "mode", "interleaved"},
     "conditions": {"load_average_start", "load_average_end", "busy_processes_start", …},
     "results": [RowResult, …]   one per backend × precision, plus the baseline row,
     "fastest": {"row", "speedup_vs_baseline", "ms_per_frame_median", "psnr_floor_db"} or null: the
                fastest row that keeps the PSNR floor (older files: absent),
     "pipeline": [PipelineResult, …] or null}

Every figure in ``results`` comes from one run, rows interleaved frame by frame; speed-ups are
ratios to the baseline row of the same run.
"""

from __future__ import annotations

import json
import math
from dataclasses import asdict, dataclass, field
from pathlib import Path

import numpy as np

from splinecam.engines.errors import SplinecamError
from splinecam.engines.quality import PSNR_FLOOR_DB, mean_psnr

SCHEMA = "splinecam-bench/1"
BASELINE_BACKEND = "torch-official"
STATUS_OK, STATUS_UNAVAILABLE, STATUS_FAILED = "ok", "unavailable", "failed"


@dataclass
class ModelInfo:
    """The model a run measured. gflops_per_frame: the official demo's per-frame work (driving
    keypoints + dense motion + inpainting, FlopCounterMode); gflops_per_frame_cached: what the
    cached backends run per frame (inpainting encoder once per avatar, not per frame)."""

    config: str
    source: str
    model_hash: str
    image_size: int
    num_kp: int
    parameters: dict[str, int]
    gflops_per_frame: float
    gflops_per_frame_cached: float
    gflops_by_network: dict[str, float]


@dataclass
class RowResult:
    """One backend × precision (or the baseline) over the run's frames.

    ms_per_frame_*: wall time of keypoints + normalise + generate for one frame (uint8 in, uint8
    out); fps = 1000 / ms_per_frame_median; stages_ms: mean ms per stage; psnr_vs_fp32: mean
    over frames of the PSNR (dB, ``engines/quality.psnr``: 100 for identical frames) against the baseline's float32 torch
    frames, None for fp32 rows; psnr_large_motion_vs_fp32: the same for one generated frame under
    a large seeded keypoint motion (``runner.large_motion_keypoints``, untimed);
    max_abs_diff_vs_fp32: the largest uint8 difference to the baseline's frames;
    speedup_vs_baseline: baseline median / this row's median; psnr_min_vs_fp32: the worst of those
    frames (large motion included), meets_psnr_floor: whether it keeps ``engines/quality.PSNR_FLOOR_DB``
    (fp32 rows: True; the baseline: None) — the ``auto`` policy's test. status "unavailable" / "failed"
    rows carry a one-line ``reason`` and None figures.
    """

    backend: str
    precision: str
    device: str
    status: str = STATUS_OK
    reason: str | None = None
    variant: str | None = None
    baseline: bool = False
    setup_s: float | None = None
    frames: int = 0
    ms_per_frame_median: float | None = None
    ms_per_frame_p90: float | None = None
    ms_per_frame_mean: float | None = None
    fps: float | None = None
    stages_ms: dict[str, float] = field(default_factory=dict)
    psnr_vs_fp32: float | None = None
    psnr_large_motion_vs_fp32: float | None = None
    max_abs_diff_vs_fp32: int | None = None
    speedup_vs_baseline: float | None = None
    psnr_min_vs_fp32: float | None = None
    meets_psnr_floor: bool | None = None

    @property
    def ok(self) -> bool:
        return self.status == STATUS_OK

    @property
    def label(self) -> str:
        return "baseline (official demo)" if self.baseline else f"{self.backend} {self.precision}"


@dataclass
class PipelineResult:
    """The whole live pipeline on a clip standing in for the camera (live/metrics.py summary).

    fps_processed: frames through the networks per second of wall time; latency_ms: capture →
    sinks, p50 / p95 / max / mean; stages_ms: mean ms per frame of each stage; frames: the live
    counters (captured, processed, dropped …).
    """

    clip: str
    backend: str
    precision: str
    device: str
    paced: bool
    output_size: str
    fps_processed: float | None
    fps_output: float | None
    latency_ms: dict
    stages_ms: dict[str, float]
    frames: dict[str, int]
    duration_s: float
    setup_s: float
    variant: str | None = None
    status: str = STATUS_OK
    reason: str | None = None
    remote: dict | None = None   # --remote: the live metrics' "remote" section (network vs worker vs inference)
    recorded: bool = False       # the recorder was on (an H.264 file written, as `demo` / `live --record` do)


@dataclass
class BenchResult:
    device: dict
    model: ModelInfo | None
    inputs: dict
    settings: dict
    conditions: dict = field(default_factory=dict)
    results: list[RowResult] = field(default_factory=list)
    pipeline: list[PipelineResult] | None = None
    fastest: dict | None = None   # fastest_at_floor(results)
    created: str = ""
    command: str = ""
    note: str = ""
    schema: str = SCHEMA

    def to_dict(self) -> dict:
        d = asdict(self)
        order = ["schema", "created", "command", "note", "device", "model", "inputs", "settings", "conditions",
                 "results", "fastest", "pipeline"]
        return {k: d[k] for k in order}

    def write(self, path: str | Path) -> Path:
        """Write the JSON atomically (NaN/inf become null)."""
        p = Path(path)
        try:
            p.parent.mkdir(parents=True, exist_ok=True)
            tmp = p.with_name(p.name + ".tmp")
            tmp.write_text(json.dumps(_finite(self.to_dict()), indent=2) + "\n")
            tmp.replace(p)
        except OSError as err:
            raise SplinecamError(f"cannot write --json {p}: {err.strerror or err}") from None
        return p

    @property
    def baseline(self) -> RowResult | None:
        return next((r for r in self.results if r.baseline), None)


def load_result(path: str | Path) -> dict:
    """A bench JSON as a dict; SplinecamError if it is not one."""
    p = Path(path)
    try:
        data = json.loads(p.read_text())
    except (OSError, ValueError) as err:
        raise SplinecamError(f"{p} is not a readable bench JSON ({err})") from None
    if not isinstance(data, dict) or data.get("schema") != SCHEMA:
        raise SplinecamError(f"{p} is not a splinecam bench result (schema {SCHEMA})")
    return data


def _finite(obj):
    if isinstance(obj, float):
        return obj if math.isfinite(obj) else None
    if isinstance(obj, dict):
        return {k: _finite(v) for k, v in obj.items()}
    if isinstance(obj, (list, tuple)):
        return [_finite(v) for v in obj]
    return obj


def summarise_times(ms: list[float]) -> tuple[float, float, float]:
    """(median, p90, mean) of per-frame times in ms."""
    a = np.asarray(ms, dtype=np.float64)
    return float(np.median(a)), float(np.percentile(a, 90)), float(a.mean())


def sequence_psnr(frames: list[np.ndarray], reference: list[np.ndarray]) -> float:
    """Mean over frames of the PSNR (dB, ``engines/quality.psnr``: 100 if identical) of uint8 frames
    against reference frames."""
    return mean_psnr(frames, reference)


def fastest_at_floor(rows: list[RowResult]) -> dict | None:
    """The fastest measured row whose every frame keeps the PSNR floor against float32 (fp32 rows count),
    the baseline aside — what the ``auto`` policy would choose among the rows: {"row", "speedup_vs_baseline",
    "ms_per_frame_median", "psnr_floor_db"}, or None."""
    eligible = [r for r in rows if r.ok and not r.baseline and r.meets_psnr_floor and r.ms_per_frame_median]
    if not eligible:
        return None
    best = min(eligible, key=lambda r: r.ms_per_frame_median)
    return {"row": best.label + (" (compiled)" if "compiled" in (best.variant or "") else ""),
            "speedup_vs_baseline": best.speedup_vs_baseline, "ms_per_frame_median": best.ms_per_frame_median,
            "psnr_floor_db": PSNR_FLOOR_DB}


def max_abs_diff(frames: list[np.ndarray], reference: list[np.ndarray]) -> int:
    return int(max(int(np.abs(a.astype(np.int16) - b.astype(np.int16)).max()) for a, b in zip(frames, reference)))
