"""The options a backend is built with, explicit (no environment switches)."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Callable


@dataclass(frozen=True)
class OrtOptions:
    """ONNX Runtime's CPU session settings (``onnxruntime_runner.session_options``); the defaults are what
    splinecam has always used. ``splinecam bench --ort-sweep`` measures the alternatives on this machine.

    graph_optimization: ``all`` (default: layout optimisations such as NCHWc blocking included), ``extended``,
    ``basic`` or ``disabled``; nchwc: let ``all`` convert convolutions to the NCHWc blocked layout (False
    disables ONNX Runtime's NchwcTransformer); inter_op_threads: threads running independent nodes in
    parallel (1: sequential execution); spinning: intra-op threads busy-wait between work items (off by
    default: on a small CPU they starve the capture / tracking / compositing threads); memory_pattern: plan
    and reuse the activations' memory across runs (static shapes); cpu_arena: ONNX Runtime's memory arena.
    """

    graph_optimization: str = "all"
    nchwc: bool = True
    inter_op_threads: int = 1
    spinning: bool = False
    memory_pattern: bool = True
    cpu_arena: bool = True

    def label(self) -> str:
        parts = [f"opt={self.graph_optimization}"]
        parts += [] if self.nchwc else ["no-nchwc"]
        parts += [f"inter={self.inter_op_threads}"] if self.inter_op_threads != 1 else []
        parts += ["spin"] if self.spinning else []
        parts += [] if self.memory_pattern else ["no-mempattern"]
        parts += [] if self.cpu_arena else ["no-arena"]
        return ",".join(parts)


@dataclass(frozen=True)
class BackendOptions:
    """How to build a backend, beyond (engine, device, precision).

    onnx_dir: an export directory to use instead of the cache (it must hold this model at this precision);
    cache_dir: where TensorRT plans are cached (default: the engine cache);
    threads: intra-op threads for CPU engines (default: torch's setting);
    compile: compile the torch CPU bf16 path with inductor (``--no-compile`` turns it off: eager autocast,
    slower, and its bf16 keypoints cost quality);
    calibration: int8 only — the video whose frames calibrate the quantization (``--calibration VIDEO``;
    default: the bundled clip and avatar, :class:`splinecam.engines.export.quantize.Calibration`);
    ort: ONNX Runtime session settings (:class:`OrtOptions`);
    progress: where one-line progress messages go (default: stdout with a ``splinecam:`` prefix).
    """

    onnx_dir: str | Path | None = None
    cache_dir: str | Path | None = None
    threads: int | None = None
    compile: bool = True
    calibration: str | Path | None = None
    ort: OrtOptions = OrtOptions()
    progress: Callable[[str], None] | None = None

    def say(self, message: str) -> None:
        if self.progress is not None:
            self.progress(message)
        else:
            print(f"splinecam: {message}", flush=True)
