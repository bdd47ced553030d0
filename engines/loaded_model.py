"""What a loaded model is, for every layer that runs one — without importing PyTorch.

:class:`LoadedModel` is made by :func:`splinecam.engines.tpsmm.checkpoint.load_checkpoint` (torch: the
networks themselves) or, in the light install (no torch), by :func:`splinecam.engines.bundled.load_bundled`
for the bundled default, whose exported graphs ship with the package (``model`` is then None: only
engines that run exported graphs — ONNX Runtime, OpenVINO — can run it).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from splinecam.engines.tpsmm.config import ModelConfig


@dataclass
class LoadedModel:
    """A model ready for inference and what was learnt loading it.

    model: the torch networks (eval mode, float32, CPU) — a TPSMM or a FOMM (``config.family``) — or None when
    torch is not installed;
    has_avd: the checkpoint carried AVD weights (``--mode avd`` needs them); has_bg: it carried
    background-predictor weights; model_hash: sha256 of the weights (every engine cache's key);
    metadata: the extra fields stored in our safetensors (training record …); shipped_export: the
    directory of this model's exported graphs that ship with the package (the bundled default), if any.
    """

    model: Any
    config: ModelConfig
    path: Path | None
    has_avd: bool
    has_bg: bool
    model_hash: str
    metadata: dict = field(default_factory=dict)
    shipped_export: Path | None = None
