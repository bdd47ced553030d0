"""Model families: what each one brings to the backends and the export — the only table of them.

A family (TPSMM, FOMM) is chosen by its config (``config.family``; TPSMM's ``ModelConfig`` has none and is
``tpsmm``), which :func:`splinecam.engines.tpsmm.checkpoint.load_checkpoint` picked from the checkpoint's
keys or the ``--config``. Each family's package provides, under the same names:

- ``<package>.host``: ``FRAME_INPUTS`` and ``generator_feeds(config, kp_driving, kp_source, bg_param)``,
  the per-frame host step (TPSMM: the TPS solve; FOMM: the jacobians' 2×2 inverses);
- ``<package>.frame_generator``: ``SourceTensors`` (``kp``, ``small``, ``heat``, ``as_inputs()``),
  ``encode_source(model, image, kp=None)`` and ``FrameGenerator(model, with_bg, compute_dtype)``;
- the model's ``kp_detector(image)`` → (N, K, ``kp_width``) keypoint rows (FOMM: position + jacobian,
  :mod:`splinecam.engines.fomm.keypoints` says why one array);
- its exported graphs' specs, ``graph_specs(model, precision, with_background)`` (``graphs_module``).

Modules are named, not imported, so nothing here imports a family (as the backend registry does).
"""

from __future__ import annotations

import importlib
from dataclasses import dataclass
from types import ModuleType
from typing import Any


@dataclass(frozen=True)
class Family:
    """One model family: ``name`` (``config.family``), ``title`` for messages, ``kp_width`` (columns of a
    keypoint row), its package and graphs module, and whether it can have an AVD network."""

    name: str
    title: str
    kp_width: int
    package: str
    graphs_module: str
    has_avd_network: bool

    def host(self) -> ModuleType:
        return importlib.import_module(f"{self.package}.host")

    def frame_generator(self) -> ModuleType:
        return importlib.import_module(f"{self.package}.frame_generator")

    def graphs(self) -> ModuleType:
        return importlib.import_module(self.graphs_module)


_ENGINES = "splinecam.engines"

FAMILIES: dict[str, Family] = {
    "tpsmm": Family("tpsmm", "TPSMM", 2, f"{_ENGINES}.tpsmm", f"{_ENGINES}.export.graphs", True),
    "fomm": Family("fomm", "FOMM", 6, f"{_ENGINES}.fomm", f"{_ENGINES}.export.fomm_graphs", False),
}


def family_of(obj: Any) -> Family:
    """The family of a config, a model or a loaded checkpoint (anything with a ``config``)."""
    config = getattr(obj, "config", obj)
    return FAMILIES[getattr(config, "family", "tpsmm")]


def avd_refusal(obj: Any, what: str = "this checkpoint") -> str:
    """The one-line reason ``--mode avd`` cannot run for a model without an AVD network."""
    family = family_of(obj)
    if not family.has_avd_network:
        return (f"--mode avd does not exist for {family.title} checkpoints (FOMM has no AVD network): use --mode "
                f"relative (the official demo's --relative --adapt_scale) or standard")
    return f"--mode avd needs a checkpoint with an AVD network ({what} has none): use --mode relative or standard"
