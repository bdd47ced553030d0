"""Where exported graphs and TensorRT plans are kept, and when a cached plan may be used.

A TensorRT plan is only valid for the GPU (model name and compute capability), TensorRT version,
precision, model weights (``LoadedModel.model_hash``), exact ONNX graph and builder settings (TF32,
workspace, optimisation level, network flags) it was built from.
:class:`PlanKey` holds all of them; its digest names the plan file, and the key itself is stored
beside the plan (``<plan>.json``, with the plan's sha256). :func:`plan_status` — a pure function —
decides from that record whether a plan is VALID, MISSING, STALE (any key part differs) or CORRUPT
(unreadable record, or plan bytes that do not match their checksum). Anything but VALID is rebuilt,
never loaded.

Layout under the cache root (``$SPLINECAM_CACHE``, else ``~/.cache/splinecam``)::

    onnx/<model_hash[:16]>-<precision>-opset<N>-v<version>-<exporter[:8]>/   manifest.json + *.onnx
    tensorrt/<graph>-<precision>-sm<cc>-trt<version>-<digest[:16]>.plan  (+ .plan.json)
"""

from __future__ import annotations

import enum
import hashlib
import json
import os
from dataclasses import asdict, dataclass
from pathlib import Path

PLAN_RECORD_FORMAT = 1


def cache_root() -> Path:
    """``$SPLINECAM_CACHE`` or ``~/.cache/splinecam``."""
    env = os.environ.get("SPLINECAM_CACHE")
    return Path(env).expanduser() if env else Path.home() / ".cache" / "splinecam"


EXPORTER_SOURCES = ("tpsmm/networks.py", "tpsmm/layers.py", "tpsmm/geometry.py", "tpsmm/frame_generator.py",
                    "tpsmm/light.py", "tpsmm/motion.py",
                    "export/graphs.py", "export/onnx_export.py", "export/onnx_fold.py")


def exporter_fingerprint() -> str:
    """sha256 of the code that decides what an exported graph computes, and of torch's version.

    Part of the cached export's directory name: an export made by other code is never reused.
    """
    import torch

    h = hashlib.sha256(torch.__version__.encode())
    engines = Path(__file__).resolve().parent
    for rel in EXPORTER_SOURCES:
        with_path = engines / rel
        h.update(rel.encode())
        h.update(with_path.read_bytes() if with_path.is_file() else b"")
    return h.hexdigest()


def onnx_export_dir(model_hash: str, precision: str, opset: int, root: Path | None = None) -> Path:
    """The cached ONNX export of one model at one precision (written by ``export_onnx``)."""
    name = f"{model_hash[:16]}-{precision}-opset{opset}-{exporter_fingerprint()[:8]}"
    return (root or cache_root()) / "onnx" / name


def plan_dir(root: Path | None = None) -> Path:
    return (root or cache_root()) / "tensorrt"


@dataclass(frozen=True)
class PlanKey:
    """Everything a TensorRT plan depends on.

    graph: exported graph name; model_hash: sha256 of the weights; precision: the ONNX graph's
    precision (fp32 / fp16; TensorRT builds strongly typed networks, so it is the graph's);
    gpu_name / compute_capability ("8.6"): the device; tensorrt_version: the builder's version;
    onnx_sha256: the exact graph file the plan was parsed from; builder_settings: the canonical text
    of every builder setting applied (``tensorrt_runner.BuilderSettings.describe()``: TF32, workspace,
    optimisation level, network flags) — a plan built with other settings is stale.
    """

    graph: str
    model_hash: str
    precision: str
    gpu_name: str
    compute_capability: str
    tensorrt_version: str
    onnx_sha256: str
    builder_settings: str

    def digest(self) -> str:
        return hashlib.sha256(json.dumps(asdict(self), sort_keys=True).encode()).hexdigest()

    def filename(self) -> str:
        cc = self.compute_capability.replace(".", "")
        safe_gpu = "".join(c if c.isalnum() else "-" for c in self.gpu_name).strip("-").lower()[:32] or "gpu"
        return (f"{self.graph}-{self.precision}-sm{cc}-{safe_gpu}-trt{self.tensorrt_version}"
                f"-{self.digest()[:16]}.plan")


class PlanStatus(enum.Enum):
    VALID = "valid"
    MISSING = "missing"
    STALE = "stale"
    CORRUPT = "corrupt"


def plan_status(key: PlanKey, record: dict | None, plan_sha256: str | None) -> tuple[PlanStatus, str]:
    """Decide whether a cached plan may be loaded (pure: no file access).

    key: what the caller needs; record: the stored ``.plan.json`` content (None: no record, or not
    JSON — pass ``{}`` for an unreadable one); plan_sha256: checksum of the plan bytes on disk (None:
    no plan file). Returns (status, one-line reason).
    """
    if plan_sha256 is None and record is None:
        return PlanStatus.MISSING, "no plan cached"
    if plan_sha256 is None:
        return PlanStatus.MISSING, "plan file missing beside its record"
    if not isinstance(record, dict) or not record:
        return PlanStatus.CORRUPT, "plan has no readable record"
    if record.get("format") != PLAN_RECORD_FORMAT or not isinstance(record.get("key"), dict):
        return PlanStatus.CORRUPT, "plan record has an unknown format"
    stored = record["key"]
    for name, want in asdict(key).items():
        have = stored.get(name)
        if have != want:
            return PlanStatus.STALE, f"built for {name}={have!r}, need {want!r}"
    if record.get("plan_sha256") != plan_sha256:
        return PlanStatus.CORRUPT, "plan bytes do not match their checksum"
    return PlanStatus.VALID, "plan matches GPU, TensorRT, precision, model, graph and builder settings"


def _sha256(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


def plan_path(key: PlanKey, directory: Path | None = None) -> Path:
    return (directory or plan_dir()) / key.filename()


def lookup_plan(key: PlanKey, directory: Path | None = None) -> tuple[PlanStatus, str, bytes | None]:
    """Read and validate a cached plan: (status, reason, plan bytes if VALID else None)."""
    path = plan_path(key, directory)
    record_path = path.with_name(path.name + ".json")
    plan_bytes = path.read_bytes() if path.is_file() else None
    record: dict | None = None
    if record_path.is_file():
        try:
            record = json.loads(record_path.read_text())
        except (OSError, ValueError):
            record = {}
    status, reason = plan_status(key, record, None if plan_bytes is None else _sha256(plan_bytes))
    return status, reason, plan_bytes if status is PlanStatus.VALID else None


def store_plan(key: PlanKey, plan_bytes: bytes, directory: Path | None = None) -> Path:
    """Write a plan and its record atomically (record last: a plan without one is never loaded)."""
    path = plan_path(key, directory)
    path.parent.mkdir(parents=True, exist_ok=True)
    record_path = path.with_name(path.name + ".json")
    if record_path.exists():
        record_path.unlink()
    tmp = path.with_name(path.name + ".tmp")
    tmp.write_bytes(plan_bytes)
    tmp.replace(path)
    record = {"format": PLAN_RECORD_FORMAT, "key": asdict(key), "plan_sha256": _sha256(plan_bytes)}
    tmp = record_path.with_name(record_path.name + ".tmp")
    tmp.write_text(json.dumps(record, indent=2))
    tmp.replace(record_path)
    return path
