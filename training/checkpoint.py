"""The training checkpoint (``checkpoint.pth`` of a run directory), typed.

On disk it is what ``train`` has always written — one ``torch.save`` dict of string keys (``format``,
``config``, ``config_name``, ``models``, ``optimizer``, ``scheduler``, ``optimizer_bg``,
``scheduler_bg``, ``optimizer_warmstart``, ``step``, ``epoch``, ``step_in_epoch``, ``warmstart_step``,
``wall_time``, ``rng``, ``options``, ``landmark_indices``, ``meta``), read with ``weights_only=True``
(nothing in it can run code) — so checkpoints written before :class:`TrainingCheckpoint` existed load
unchanged, and older splinecam versions read the new ones. In memory it is :class:`TrainingCheckpoint`:
``from_dict`` / ``to_dict`` are the only places that know the keys; keys an older writer did not have
take their defaults (no warm start, no background optimiser, no landmark indices, empty meta).
Written atomically (tmp in the same folder, fsync, ``os.replace``).
"""

from __future__ import annotations

import ast
import os
import random
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch
import yaml

from splinecam.engines.errors import CheckpointError
from splinecam.engines.tpsmm.config import ModelConfig, config_from_dict
from splinecam.engines.tpsmm.networks import TPSMM
from splinecam.engines.validate import ValidationError, check_finite_tensors

CHECKPOINT = "checkpoint.pth"
FORMAT = "splinecam-training"
# what resuming needs besides models/config (an export or evaluation needs only those two)
RESUME_KEYS = ("optimizer", "scheduler", "rng")


@dataclass
class Progress:
    """Where a run is: optimisation steps done, the epoch and steps into it, warm-start steps, seconds."""

    step: int = 0
    epoch: int = 0
    step_in_epoch: int = 0
    warm_step: int = 0
    wall: float = 0.0


@dataclass
class OptimiserStates:
    """``state_dict()`` of each optimiser and lr scheduler (None: that one does not exist in the run)."""

    optimizer: dict | None = None
    scheduler: dict | None = None
    optimizer_bg: dict | None = None
    scheduler_bg: dict | None = None
    optimizer_warmstart: dict | None = None


@dataclass
class TrainingCheckpoint:
    """Everything ``train --resume`` continues from, and what export / evaluation read (config, models)."""

    config: str  # the model config as YAML (official layout)
    config_name: str | None
    models: dict[str, dict[str, torch.Tensor]]  # state dict per present network (official names)
    progress: Progress = field(default_factory=Progress)
    optimisers: OptimiserStates = field(default_factory=OptimiserStates)
    rng: dict | None = None  # rng_state()
    options: dict[str, Any] = field(default_factory=dict)  # asdict(TrainOptions) of the run that wrote it
    landmark_indices: list[int] | None = None  # face-mesh landmark per keypoint (landmark supervision)
    meta: dict[str, Any] = field(default_factory=dict)  # config name, perceptual net, image size, world size, bf16, init
    format: str = FORMAT

    def to_dict(self) -> dict:
        """The on-disk layout (the same keys, in the same order, as every earlier version wrote)."""
        p, o = self.progress, self.optimisers
        return {
            "format": self.format, "config": self.config, "config_name": self.config_name, "models": self.models,
            "optimizer": o.optimizer, "scheduler": o.scheduler, "optimizer_bg": o.optimizer_bg,
            "scheduler_bg": o.scheduler_bg, "optimizer_warmstart": o.optimizer_warmstart,
            "step": p.step, "epoch": p.epoch, "step_in_epoch": p.step_in_epoch, "warmstart_step": p.warm_step,
            "wall_time": p.wall, "rng": self.rng, "options": self.options,
            "landmark_indices": self.landmark_indices, "meta": self.meta,
        }

    @classmethod
    def from_dict(cls, data: dict, where: str = "checkpoint") -> "TrainingCheckpoint":
        """A loaded checkpoint dict, any version (missing optional keys take their defaults)."""
        if not isinstance(data, dict) or "models" not in data or "config" not in data:
            raise CheckpointError(f"{where} is not a splinecam training checkpoint (no models/config)")
        if not isinstance(data["models"], dict) or not isinstance(data["config"], str):
            raise CheckpointError(f"{where}: its models/config are not a training checkpoint's")
        try:
            progress = Progress(int(data.get("step", 0)), int(data.get("epoch", 0)), int(data.get("step_in_epoch", 0)),
                                int(data.get("warmstart_step") or 0), float(data.get("wall_time") or 0.0))
        except (TypeError, ValueError):
            raise CheckpointError(f"{where}: its step/epoch counters are not numbers") from None
        optimisers = OptimiserStates(*(data.get(k) for k in ("optimizer", "scheduler", "optimizer_bg",
                                                             "scheduler_bg", "optimizer_warmstart")))
        indices = data.get("landmark_indices")
        return cls(config=data["config"], config_name=data.get("config_name"), models=data["models"],
                   progress=progress, optimisers=optimisers, rng=data.get("rng"), options=dict(data.get("options") or {}),
                   landmark_indices=[int(i) for i in indices] if indices is not None else None,
                   meta=dict(data.get("meta") or {}), format=str(data.get("format", FORMAT)))

    def check_resumable(self, where: str) -> None:
        """One line when the file lacks what ``--resume`` needs (an export-only or truncated checkpoint)."""
        missing = [k for k in RESUME_KEYS if (self.rng if k == "rng" else getattr(self.optimisers, k)) is None]
        if missing:
            raise CheckpointError(f"{where} cannot be resumed: it has no {', '.join(missing)} "
                                  f"(use it as --init for a new run instead)")

    def model_config(self, fallback_name: str = "run") -> ModelConfig:
        """The model config stored in the checkpoint."""
        try:
            return config_from_dict(yaml.safe_load(self.config), self.config_name or fallback_name)
        except (yaml.YAMLError, TypeError) as exc:
            raise CheckpointError(f"the training checkpoint's stored config is unreadable ({exc})") from None


def rng_state() -> dict:
    """torch, numpy and python RNG states, as tensors / ints / a string (loadable with weights_only)."""
    np_state = np.random.get_state()
    return {"torch": torch.get_rng_state(), "numpy_keys": torch.from_numpy(np_state[1].astype(np.int64)),
            "numpy_pos": int(np_state[2]), "python": repr(random.getstate())}


def set_rng_state(state: dict) -> None:
    """Restore what :func:`rng_state` captured."""
    torch.set_rng_state(state["torch"])
    np.random.set_state(("MT19937", state["numpy_keys"].numpy().astype(np.uint32), state["numpy_pos"], 0, 0.0))
    random.setstate(ast.literal_eval(state["python"]))


def save_checkpoint(path: Path, payload: dict | TrainingCheckpoint) -> None:
    """torch.save to a temporary file in the same folder, fsync, then os.replace (atomic)."""
    if isinstance(payload, TrainingCheckpoint):
        payload = payload.to_dict()
    tmp = path.with_name(path.name + f".tmp{os.getpid()}")
    with tmp.open("wb") as f:
        torch.save(payload, f)
        f.flush()
        os.fsync(f.fileno())
    os.replace(tmp, path)


def read_training_checkpoint(path: str | Path) -> TrainingCheckpoint:
    """A checkpoint written by ``train``, any version (weights_only: nothing in it can run code)."""
    path = Path(path)
    if not path.is_file():
        raise CheckpointError(f"no checkpoint at {path}: train first (or drop --resume)")
    try:
        data = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as exc:  # noqa: BLE001
        raise CheckpointError(f"{path} is not a readable training checkpoint ({str(exc).splitlines()[0][:160]})") from None
    return TrainingCheckpoint.from_dict(data, str(path))


def model_from_training_checkpoint(ckpt: TrainingCheckpoint) -> TPSMM:
    """Rebuild the TPSMM of a training checkpoint with its weights (checked finite)."""
    model = TPSMM(ckpt.model_config())
    for name, module in model.submodules().items():
        if name in ckpt.models:
            try:
                check_finite_tensors(ckpt.models[name], f"training checkpoint: {name}")
                module.load_state_dict(ckpt.models[name])
            except ValidationError as err:
                raise CheckpointError(str(err)) from None
            except RuntimeError as exc:
                raise CheckpointError(f"training checkpoint: {name} does not match its config "
                                      f"({str(exc).splitlines()[0][:160]})") from None
    return model
