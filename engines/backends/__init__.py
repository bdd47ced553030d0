"""Backends: where the networks run. ``create_backend`` picks one from the CLI's choices."""

from __future__ import annotations

from engines.backends.base import BACKENDS, PRECISIONS, Backend, SourceState, StageTimer
from engines.errors import BackendUnavailableError
from engines.tpsmm.checkpoint import LoadedModel

__all__ = ["BACKENDS", "PRECISIONS", "Backend", "SourceState", "StageTimer", "create_backend", "resolve_choice"]


def resolve_choice(backend: str, device: str, precision: str) -> tuple[str, str, str]:
    """Turn ``auto`` choices into concrete ones for this machine.

    auto backend: torch on CPU or CUDA. auto precision: bf16 on a CPU with AVX-512 bf16/AMX, fp16 on
    CUDA, fp32 otherwise.
    """
    import torch

    if device == "auto":
        device = "cuda" if torch.cuda.is_available() else "cpu"
    if backend == "auto":
        backend = "torch"
    if precision == "auto":
        from engines.backends.torch_backend import _cpu_has_bf16

        precision = "fp16" if device == "cuda" else ("bf16" if _cpu_has_bf16() else "fp32")
    return backend, device, precision


def create_backend(loaded: LoadedModel, backend: str = "auto", device: str = "auto", precision: str = "auto") -> Backend:
    """Build the requested backend; raises BackendUnavailableError with a one-line reason."""
    backend, device, precision = resolve_choice(backend, device, precision)
    if backend == "torch":
        from engines.backends.torch_backend import TorchBackend

        return TorchBackend(loaded, device, precision)
    raise BackendUnavailableError(f"--backend {backend}: not available in this build; use --backend torch")
