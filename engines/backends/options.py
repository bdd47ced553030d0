"""The options a backend is built with, explicit (no environment switches)."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Callable


@dataclass(frozen=True)
class BackendOptions:
    """How to build a backend, beyond (engine, device, precision).

    onnx_dir: an export directory to use instead of the cache (it must hold this model at this precision);
    cache_dir: where TensorRT plans are cached (default: the engine cache);
    threads: intra-op threads for CPU engines (default: torch's setting);
    compile: compile the torch CPU bf16 path with inductor (``--no-compile`` turns it off: eager autocast,
    slower, and its bf16 keypoints cost quality);
    progress: where one-line progress messages go (default: stdout with a ``splinecam:`` prefix).
    """

    onnx_dir: str | Path | None = None
    cache_dir: str | Path | None = None
    threads: int | None = None
    compile: bool = True
    progress: Callable[[str], None] | None = None

    def say(self, message: str) -> None:
        if self.progress is not None:
            self.progress(message)
        else:
            print(f"splinecam: {message}", flush=True)
