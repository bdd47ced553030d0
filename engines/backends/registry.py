"""The backend registry: the only table of engines, the devices they run on and the precisions they run.

Both ``auto`` (:mod:`splinecam.engines.backends.policy`) and :func:`splinecam.engines.backends.create_backend`
read it; no constructor re-checks a combination. Adding a backend = one :class:`GraphRunner` subclass
(:mod:`splinecam.engines.backends.base`) + one row here.

A row names its runner by module and class, imported only when the row is used, so a machine without
TensorRT (or OpenVINO …) never imports it; ``requirement`` says in one line why a row cannot run here
(not installed, no GPU, a CPU without bf16 …) or returns None.
"""

from __future__ import annotations

import importlib
from dataclasses import dataclass
from typing import Callable

from splinecam.engines.errors import BackendUnavailableError

DEVICES = ("cpu", "cuda", "intel-gpu")
PRECISIONS = ("fp32", "bf16", "fp16", "int8")


TORCH_MISSING = "PyTorch is not installed (pip install 'splinecam[torch]')"


def _cuda_missing() -> str | None:
    from splinecam.engines.bundled import torch_available

    if not torch_available():
        return f"no CUDA GPU can be used: {TORCH_MISSING}"
    import torch

    return None if torch.cuda.is_available() else "no CUDA GPU is visible to torch"


def _torch_requirement(device: str, precision: str) -> str | None:
    from splinecam.engines.bundled import torch_available

    if not torch_available():
        return TORCH_MISSING
    if device == "cuda":
        return _cuda_missing()
    if precision == "bf16":
        from splinecam.engines.cpu import cpu_info

        cpu = cpu_info()
        return None if cpu.has_bf16 else f"bf16 needs a CPU with AVX-512 bf16 / AMX ({cpu.label})"
    return None


def _onnx_missing(what: str) -> str | None:
    import importlib.util

    if importlib.util.find_spec("onnx") is None:
        return f"{what} needs the onnx package (pip install onnx, or pip install 'splinecam[torch]')"
    return None


def _int8_requirement() -> str | None:
    """int8 graphs are quantized with ONNX Runtime's static quantizer (QDQ), for ONNX Runtime and OpenVINO."""
    missing = _onnx_missing("int8 (quantizing the graphs)")
    if missing:
        return missing
    try:
        import onnxruntime.quantization  # noqa: F401
    except ImportError as exc:
        return f"int8 needs onnxruntime's quantization tools ({exc})"
    return None


def _ort_requirement(device: str, precision: str) -> str | None:
    if precision == "int8":
        return _int8_requirement()
    if precision == "fp16" and _onnx_missing("fp16 (converting the fp32 graphs)"):
        return _onnx_missing("fp16 (converting the fp32 graphs)")
    if device == "cuda":
        import onnxruntime as ort

        if "CUDAExecutionProvider" not in ort.get_available_providers():
            return "this onnxruntime has no CUDA execution provider (pip install onnxruntime-gpu)"
        return _cuda_missing()
    return None


def _ov_requirement(device: str, precision: str) -> str | None:
    from splinecam.engines.backends.openvino_runner import openvino_unavailable_reason

    reason = openvino_unavailable_reason(device)
    if reason is None and precision == "int8":
        return _int8_requirement()
    if reason is None and device == "cpu" and precision == "bf16":
        from splinecam.engines.cpu import cpu_info

        cpu = cpu_info()
        return None if cpu.has_bf16 else f"bf16 needs a CPU with AVX-512 bf16 / AMX ({cpu.label})"
    return reason


def _trt_requirement(device: str, precision: str) -> str | None:
    from splinecam.engines.backends.tensorrt_runner import tensorrt_unavailable_reason

    return tensorrt_unavailable_reason()


@dataclass(frozen=True)
class EngineRow:
    """One engine: the precisions it runs per device, its runner (module, class) and its requirement.

    ``hints`` maps a precision the engine does not run to the one-line advice given instead.
    """

    engine: str
    precisions: dict[str, tuple[str, ...]]
    module: str
    runner: str
    requirement: Callable[[str, str], str | None]
    summary: str
    hints: dict[str, str]

    def devices(self) -> tuple[str, ...]:
        return tuple(self.precisions)

    def runs(self, device: str, precision: str) -> bool:
        return precision in self.precisions.get(device, ())

    def runner_class(self):
        return getattr(importlib.import_module(self.module), self.runner)


_PKG = "splinecam.engines.backends"

ROWS: tuple[EngineRow, ...] = (
    EngineRow("torch", {"cpu": ("fp32", "bf16"), "cuda": ("fp32", "bf16", "fp16")}, f"{_PKG}.torch_runner",
              "TorchGraphs", _torch_requirement,
              "PyTorch eager (CPU bf16: compiled by inductor unless --no-compile)",
              {"fp16": "torch fp16 runs on CUDA only; on CPU use bf16, or --backend onnxruntime for fp16",
               "int8": "int8 runs on --backend onnxruntime or openvino (CPU)"}),
    EngineRow("onnxruntime", {"cpu": ("fp32", "fp16", "int8"), "cuda": ("fp32", "fp16")}, f"{_PKG}.onnxruntime_runner",
              "OnnxRuntimeGraphs", _ort_requirement, "ONNX Runtime on the exported graphs (CPU int8: QDQ graphs)",
              {"bf16": "ONNX Runtime has no bf16 path; use --backend torch --precision bf16 or fp32",
               "int8": "int8 runs on the CPU: --device cpu"}),
    EngineRow("openvino", {"cpu": ("fp32", "bf16", "int8"), "intel-gpu": ("fp32", "fp16")}, f"{_PKG}.openvino_runner",
              "OpenVinoGraphs", _ov_requirement, "OpenVINO on the exported graphs (CPU; Intel GPU)",
              {"fp16": "OpenVINO fp16 is for --device intel-gpu; on CPU use fp32 or bf16",
               "int8": "OpenVINO int8 runs on --device cpu"}),
    EngineRow("tensorrt", {"cuda": ("fp16", "fp32")}, f"{_PKG}.tensorrt_runner", "TensorRTGraphs", _trt_requirement,
              "TensorRT plans built from the exported graphs (strongly typed)",
              {"bf16": "TensorRT plans are built from fp16 or fp32 graphs",
               "int8": "TensorRT plans are built from fp16 or fp32 graphs; int8 runs on the CPU (onnxruntime, openvino)"}),
)

REGISTRY: dict[str, EngineRow] = {row.engine: row for row in ROWS}
BACKENDS: tuple[str, ...] = tuple(REGISTRY)

#: the compiled torch CPU path: a variant of the torch row (same engine, same precisions), chosen by the
#: ``compile`` option; its runner class
COMPILED_TORCH = (f"{_PKG}.torch_compiled", "CompiledTorchGraphs")


def row(engine: str) -> EngineRow:
    try:
        return REGISTRY[engine]
    except KeyError:
        raise BackendUnavailableError(f"--backend {engine}: choose one of auto, {', '.join(BACKENDS)}") from None


def check(engine: str, device: str, precision: str, here: bool = True) -> None:
    """Raise one line unless the registry lists ``engine`` × ``device`` × ``precision`` and (``here``) this
    machine meets the row's requirement (installed, GPU present, CPU features)."""
    r = row(engine)
    if device not in r.precisions:
        others = ", ".join(r.devices())
        raise BackendUnavailableError(f"--backend {engine} runs on --device {others} only"
                                      + ("; on CPU use torch or onnxruntime" if device == "cpu" else ""))
    if not r.runs(device, precision):
        hint = r.hints.get(precision, f"use {' or '.join(r.precisions[device])}")
        raise BackendUnavailableError(f"--backend {engine} --device {device} --precision {precision}: {hint}")
    reason = r.requirement(device, precision) if here else None
    if reason:
        raise BackendUnavailableError(f"--backend {engine} --device {device} --precision {precision}: {reason}")


def combinations(device: str | None = None) -> list[tuple[str, str, str]]:
    """Every (engine, device, precision) the registry lists (whether or not it can run here)."""
    return [(r.engine, d, p) for r in ROWS for d, ps in r.precisions.items() if device in (None, d) for p in ps]
