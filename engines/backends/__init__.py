"""Backends: where the networks run. ``create_backend`` builds one from the CLI's choices.

``--backend auto|torch|onnxruntime|tensorrt``, ``--device auto|cpu|cuda``,
``--precision auto|fp32|bf16|fp16``; :func:`resolve_choice` documents how ``auto`` is decided. The legal
combinations are the registry's (:mod:`splinecam.engines.backends.registry`), the only table of them.

    backend = create_backend(loaded, "auto", "auto", "auto", BackendOptions(progress=print))
"""

from __future__ import annotations

import warnings
from dataclasses import dataclass

from splinecam.engines.backends.base import Backend, GraphRunner, SourceState, StageTimer
from splinecam.engines.backends.options import BackendOptions
from splinecam.engines.backends.registry import BACKENDS, COMPILED_TORCH, DEVICES, PRECISIONS, REGISTRY, check
from splinecam.engines.errors import BackendUnavailableError
from splinecam.engines.loaded_model import LoadedModel  # noqa: F401 (annotations)

__all__ = ["BACKENDS", "DEVICE_CHOICES", "PRECISIONS", "REGISTRY", "Backend", "BackendOptions", "Choice", "GraphRunner",
           "SourceState", "StageTimer", "create_backend", "resolve_choice"]

DEVICE_CHOICES = ("auto",) + DEVICES


def _cuda_available() -> bool:
    from splinecam.engines.bundled import torch_available

    if not torch_available():
        return False
    import torch

    return torch.cuda.is_available()


def _cpu_has_bf16() -> bool:
    from splinecam.engines.cpu import cpu_info

    return cpu_info().has_bf16


def _torch_available() -> bool:
    from splinecam.engines.bundled import torch_available

    return torch_available()


def _tensorrt_ready() -> bool:
    return REGISTRY["tensorrt"].requirement("cuda", "fp16") is None


def _ort_has_cuda() -> bool:
    return REGISTRY["onnxruntime"].requirement("cuda", "fp16") is None


def resolve_choice(backend: str, device: str, precision: str) -> tuple[str, str, str]:
    """Turn ``auto`` choices into concrete ones for this machine; refuse impossible combinations.

    The ``auto`` policy — the fastest choice whose output stays ≥ 35 dB PSNR against float32 on
    the same weights, as measured by ``splinecam bench`` (figures in ``benchmarks/results/``):

    * device ``auto``: ``cuda`` when torch sees an NVIDIA GPU (or for ``--backend tensorrt``), else ``cpu``.
    * CPU, everything ``auto``: on a CPU with AVX-512 bf16 or AMX, ``torch`` + ``bf16``, which on
      the CPU is the compiled path (:class:`splinecam.engines.backends.torch_compiled.CompiledTorchGraphs`:
      source cached; generator in bfloat16, channels_last, compiled by inductor; keypoint detector, TPS
      and Gaussians float32); measured on a 2-core AMX Xeon at 5.8× the official demo's float32 per-frame
      work at 54.6 dB. If compiling fails, ``auto`` falls back to ``onnxruntime`` fp32 with a warning.
      On CPUs without bf16: ``torch`` + ``fp32``.
    * CPU with an explicit precision and backend ``auto``: ``fp32`` → ``torch``; ``bf16`` → ``torch``
      (compiled as above); ``fp16`` → ``onnxruntime`` (its fp16 graphs are the only CPU fp16 path).
    * ``--backend torch --precision bf16`` on CPU: compiled as above; if compiling fails (or with
      ``--no-compile``), the eager autocast path — it runs the keypoint detector in bf16 too and measured
      31–37 dB, under the 35 dB floor.
    * CUDA, backend ``auto``: ``tensorrt`` when TensorRT 10.12+ is installed, else ``onnxruntime``
      when its CUDA execution provider is present, else ``torch``; precision ``auto``: ``fp16`` (fp16
      networks, float32 TPS / Gaussian maths). Not measured: no GPU was available.
    * An explicit backend with precision ``auto``: torch → as above; onnxruntime → ``fp32`` on
      CPU, ``fp16`` on CUDA; tensorrt → ``fp16``.

    Raises BackendUnavailableError (one line) for a combination the registry does not list or this
    machine cannot run.
    """
    if backend not in ("auto",) + BACKENDS:
        raise BackendUnavailableError(f"--backend {backend}: choose one of auto, {', '.join(BACKENDS)}")
    if device not in DEVICE_CHOICES:
        raise BackendUnavailableError(f"--device {device}: choose one of {', '.join(DEVICE_CHOICES)}")
    if precision not in ("auto",) + PRECISIONS:
        raise BackendUnavailableError(f"--precision {precision}: choose one of auto, {', '.join(PRECISIONS)}")
    cpu_capable = backend == "auto" or "cpu" in REGISTRY[backend].precisions
    if device == "auto":
        device = "cuda" if not cpu_capable or _cuda_available() else "cpu"
    if device == "cuda" and not _cuda_available():
        needed = "" if cpu_capable else f" (needed by --backend {backend})"
        raise BackendUnavailableError(f"--device cuda{needed}: no CUDA GPU is visible to torch; use --device cpu "
                                      f"with --backend torch or onnxruntime")
    if backend == "auto":
        if device == "intel-gpu":
            backend = "openvino"
        elif device == "cuda":
            backend = "tensorrt" if _tensorrt_ready() else ("onnxruntime" if _ort_has_cuda() else "torch")
        elif not _torch_available():  # the light install: the exported-graph engines only
            backend = "openvino" if REGISTRY["openvino"].requirement("cpu", "fp32") is None else "onnxruntime"
        else:
            backend = "onnxruntime" if precision == "fp16" else "torch"
    if precision == "auto":
        if device in ("cuda", "intel-gpu"):
            precision = "fp16"
        elif backend == "torch":
            precision = "bf16" if _cpu_has_bf16() else "fp32"
        else:
            precision = "fp32"
    check(backend, device, precision, here=False)
    return backend, device, precision


@dataclass(frozen=True)
class Choice:
    """One concrete way to build a backend: a registry row, device and precision, compiled or not."""

    engine: str
    device: str
    precision: str
    compiled: bool = False

    def runner_class(self):
        if self.compiled:
            import importlib

            module, name = COMPILED_TORCH
            return getattr(importlib.import_module(module), name)
        return REGISTRY[self.engine].runner_class()


def candidates(backend: str, device: str, precision: str, options: BackendOptions) -> list[Choice]:
    """The resolved choice and, where a step may fail at build time (compiling), what to fall back to."""
    engine, device, precision = resolve_choice(backend, device, precision)
    if engine == "torch" and device == "cpu" and precision == "bf16" and options.compile:
        fallback = Choice("onnxruntime", "cpu", "fp32") if backend == "auto" else Choice("torch", "cpu", "bf16")
        return [Choice("torch", "cpu", "bf16", compiled=True), fallback]
    return [Choice(engine, device, precision)]


def create_backend(loaded: LoadedModel, backend: str = "auto", device: str = "auto", precision: str = "auto",
                   options: BackendOptions | None = None) -> Backend:
    """Build the requested backend; raises BackendUnavailableError with a one-line reason."""
    options = options or BackendOptions()
    choices = candidates(backend, device, precision, options)
    check(choices[0].engine, choices[0].device, choices[0].precision)
    for i, choice in enumerate(choices):
        last = i == len(choices) - 1
        try:
            runner = choice.runner_class()(loaded, choice.device, choice.precision, options)
        except BackendUnavailableError:
            raise
        except Exception as exc:  # compiling: no C++ compiler, an inductor limitation …
            if last or not choice.compiled:
                raise
            first = (str(exc).strip().splitlines() or [type(exc).__name__])[0][:160]
            nxt = choices[i + 1]
            what = (f"using {nxt.engine} {nxt.precision} instead" if nxt.engine != "torch" else
                    "running eager bf16 instead, whose bf16 keypoints cost quality (--no-compile skips the attempt)")
            warnings.warn(f"compiling the bf16 CPU path failed ({first}); {what}", stacklevel=2)
            continue
        return Backend.for_model(loaded, runner)
    raise AssertionError("unreachable")  # pragma: no cover

