"""Backends: where the networks run. ``create_backend`` picks one from the CLI's choices.

``--backend auto|torch|onnxruntime|tensorrt``, ``--device auto|cpu|cuda``,
``--precision auto|fp32|bf16|fp16``; :func:`resolve_choice` documents how ``auto`` is decided.
"""

from __future__ import annotations

import os
import warnings

from splinecam.engines.backends.base import BACKENDS, PRECISIONS, Backend, SourceState, StageTimer
from splinecam.engines.errors import BackendUnavailableError
from splinecam.engines.tpsmm.checkpoint import LoadedModel

__all__ = ["BACKENDS", "PRECISIONS", "Backend", "SourceState", "StageTimer", "create_backend", "resolve_choice",
           "SUPPORTED"]

# (backend, device) → precisions it can run; anything else is BackendUnavailableError.
SUPPORTED: dict[tuple[str, str], tuple[str, ...]] = {
    ("torch", "cpu"): ("fp32", "bf16"),
    ("torch", "cuda"): ("fp32", "bf16", "fp16"),
    ("onnxruntime", "cpu"): ("fp32", "fp16"),
    ("onnxruntime", "cuda"): ("fp32", "fp16"),
    ("tensorrt", "cuda"): ("fp16", "fp32"),
}


def _cuda_available() -> bool:
    import torch

    return torch.cuda.is_available()


def _cpu_has_bf16() -> bool:
    from splinecam.engines.backends.torch_backend import _cpu_has_bf16 as has

    return has()


def _tensorrt_ready() -> bool:
    from splinecam.engines.backends.tensorrt_backend import tensorrt_unavailable_reason

    return tensorrt_unavailable_reason() is None


def resolve_choice(backend: str, device: str, precision: str) -> tuple[str, str, str]:
    """Turn ``auto`` choices into concrete ones for this machine; refuse impossible combinations.

    The ``auto`` policy — the fastest choice whose output stays ≥ 35 dB PSNR against float32 on
    the same weights, as measured by ``benchmarks/cpu_speed.py`` (vox-256 at 256×256, 2-core AMX
    Xeon, every frame computed; figures in ``benchmarks/results/cpu_speed.json``):

    * device ``auto``: ``cuda`` when torch sees an NVIDIA GPU, else ``cpu``.
    * CPU, everything ``auto``: on a CPU with AVX-512 bf16 or AMX, ``torch`` + ``bf16``, which on
      the CPU is the compiled path (:class:`splinecam.engines.export.torch_inductor.CompiledTorchBackend`:
      source cached; generator in bfloat16, channels_last, compiled by inductor with frozen,
      pre-packed weights; keypoint detector, TPS and Gaussians float32): measured 224 ms per frame,
      5.8× the official demo's float32 per-frame work (1289 ms), at 54.6 dB PSNR. The other CPU
      choices measured 911–1117 ms (ONNX Runtime fp32 957 ms, exact; eager torch fp32 with the
      source cached 1117 ms; eager autocast bf16 453 ms but under 35 dB). Its first start compiles for about a minute (cached afterwards); if
      compiling fails (no C++ compiler …) ``auto`` falls back to ``onnxruntime`` fp32 with a warning.
      On CPUs without bf16: ``torch`` + ``fp32`` (not measured on such a CPU).
    * CPU with an explicit precision and backend ``auto``: ``fp32`` → ``torch`` (exact, no
      export or compile step); ``bf16`` → ``torch`` (compiled as above); ``fp16`` → ``onnxruntime``
      (its fp16 graphs are the only CPU fp16 path; about as fast as its fp32 here, 57 dB).
    * ``--backend torch --precision bf16`` on CPU: compiled as above; if compiling fails, the eager
      autocast path with a warning — it runs the keypoint detector in bf16 too and measured
      31–37 dB (28.7 dB on a large motion), under the 35 dB floor. ``SPLINECAM_TORCH_COMPILE=0`` asks for the eager path.
    * CUDA, backend ``auto``: ``tensorrt`` when TensorRT 10.12+ is installed, else
      ``onnxruntime`` when its CUDA execution provider is present, else ``torch``; precision
      ``auto``: ``fp16`` (fp16 networks, float32 TPS / Gaussian maths). Not measured: no GPU was
      available; this follows the usual ranking of these runtimes.
    * An explicit backend with precision ``auto``: torch → as above; onnxruntime → ``fp32`` on
      CPU, ``fp16`` on CUDA; tensorrt → ``fp16``.

    Raises BackendUnavailableError (one line) for a combination that cannot run here, e.g.
    ``--device cuda`` without a GPU, ``--backend tensorrt`` on CPU, ``--backend onnxruntime
    --precision bf16`` (no bf16 path in ONNX Runtime's CPU EP), ``--precision fp16`` with torch on CPU.
    """
    for value, allowed, flag in ((backend, ("auto",) + BACKENDS, "--backend"), (device, ("auto", "cpu", "cuda"), "--device"),
                                 (precision, ("auto",) + PRECISIONS, "--precision")):
        if value not in allowed:
            raise BackendUnavailableError(f"{flag} {value}: choose one of {', '.join(allowed)}")
    if device == "auto":
        device = "cuda" if backend == "tensorrt" or _cuda_available() else "cpu"
    if device == "cuda" and not _cuda_available():
        raise BackendUnavailableError(f"--device cuda{' (needed by --backend tensorrt)' if backend == 'tensorrt' else ''}: "
                                      f"no CUDA GPU is visible to torch; use --device cpu with --backend torch or onnxruntime")
    if backend == "auto":
        if device == "cuda":
            backend = "tensorrt" if _tensorrt_ready() else ("onnxruntime" if _ort_has_cuda() else "torch")
        else:
            backend = "onnxruntime" if precision == "fp16" else "torch"
    if backend == "tensorrt" and device != "cuda":
        raise BackendUnavailableError("--backend tensorrt runs on --device cuda only; on CPU use torch or onnxruntime")
    if precision == "auto":
        if device == "cuda":
            precision = "fp16"
        elif backend == "torch":
            precision = "bf16" if _cpu_has_bf16() else "fp32"
        else:
            precision = "fp32"
    allowed = SUPPORTED[(backend, device)]
    if precision not in allowed:
        hint = {("onnxruntime", "bf16"): "ONNX Runtime has no bf16 path; use --backend torch --precision bf16 or fp32",
                ("torch", "fp16"): "torch fp16 runs on CUDA only; on CPU use bf16, or --backend onnxruntime for fp16",
                ("tensorrt", "bf16"): "TensorRT plans are built from fp16 or fp32 graphs"}.get((backend, precision),
                                                                                            f"use {' or '.join(allowed)}")
        raise BackendUnavailableError(f"--backend {backend} --device {device} --precision {precision}: {hint}")
    return backend, device, precision


def _ort_has_cuda() -> bool:
    try:
        import onnxruntime as ort
    except ImportError:  # pragma: no cover - a hard dependency
        return False
    return "CUDAExecutionProvider" in ort.get_available_providers()


def create_backend(loaded: LoadedModel, backend: str = "auto", device: str = "auto", precision: str = "auto",
                   **options) -> Backend:
    """Build the requested backend; raises BackendUnavailableError with a one-line reason.

    ``options`` go to the backend: ``onnx_dir`` (an export directory instead of the cache) and
    ``progress`` for onnxruntime / tensorrt (``progress`` also for the compiled torch CPU path),
    ``cache_dir`` for tensorrt plans.
    """
    requested = backend
    backend, device, precision = resolve_choice(backend, device, precision)
    if backend == "torch":
        from splinecam.engines.backends.torch_backend import TorchBackend

        if device == "cpu" and precision == "bf16" and os.environ.get("SPLINECAM_TORCH_COMPILE", "1") != "0":
            try:
                from splinecam.engines.export.torch_inductor import CompiledTorchBackend

                return CompiledTorchBackend(loaded, precision, progress=options.get("progress"))
            except BackendUnavailableError:
                raise
            except Exception as exc:  # no C++ compiler, an inductor limitation …
                first = (str(exc).strip().splitlines() or [type(exc).__name__])[0][:160]
                if requested == "auto":
                    warnings.warn(f"compiling the bf16 CPU path failed ({first}); using onnxruntime fp32 instead",
                                  stacklevel=2)
                    return create_backend(loaded, "onnxruntime", "cpu", "fp32", **options)
                warnings.warn(f"compiling the bf16 CPU path failed ({first}); running eager bf16 instead, whose "
                              f"bf16 keypoints cost quality (SPLINECAM_TORCH_COMPILE=0 skips the attempt)", stacklevel=2)
        return TorchBackend(loaded, device, precision)
    if backend == "onnxruntime":
        from splinecam.engines.backends.onnxruntime_backend import OnnxRuntimeBackend

        return OnnxRuntimeBackend(loaded, device, precision, **options)
    from splinecam.engines.backends.tensorrt_backend import TensorRTBackend

    return TensorRTBackend(loaded, device, precision, **options)
