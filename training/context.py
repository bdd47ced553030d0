"""What the warm-start loop and the main loop of a ``train`` run share: :class:`TrainRun` (the model,
its optimisers, the progress counters, the run's files), its checkpointing (:class:`Checkpointer`)
and the signal flag (:class:`StopFlag`: SIGINT / SIGTERM / SIGHUP finish the step, checkpoint, and the
run exits 128 + signal)."""

from __future__ import annotations

import contextlib
import signal
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING

import torch
import yaml
from torch import nn

from splinecam.engines.interrupts import SIGNALS
from splinecam.engines.tpsmm.config import ModelConfig
from splinecam.engines.tpsmm.networks import TPSMM
from splinecam.training.checkpoint import CHECKPOINT, Progress, TrainingCheckpoint, rng_state, save_checkpoint
from splinecam.training.distributed import Dist
from splinecam.training.options import TrainOptions, TrainSchedule
from splinecam.training.runfiles import RunFiles, RunLog, plot_learning_curve

if TYPE_CHECKING:
    from splinecam.training.step import FullModel, Optimisers


class StopFlag:
    """Set by SIGINT / SIGTERM / SIGHUP while :meth:`installed`: the loops stop after the step in hand."""

    def __init__(self):
        self.signum: int | None = None

    def __bool__(self) -> bool:
        return self.signum is not None

    def _on_signal(self, signum, frame) -> None:
        self.signum = self.signum or signum

    @contextlib.contextmanager
    def installed(self):
        old = {s: signal.signal(s, self._on_signal) for s in SIGNALS}
        try:
            yield self
        finally:
            for s, h in old.items():
                signal.signal(s, h)


@dataclass
class Checkpointer:
    """When to checkpoint (every ``minutes``, and/or every ``steps``) and when it last happened."""

    minutes: float
    steps: int | None
    last: float = field(default_factory=time.time)

    def due(self, step: int) -> bool:
        if self.steps and step % self.steps == 0:
            return True
        return (time.time() - self.last) >= self.minutes * 60

    @property
    def reason(self) -> str:
        return "steps" if self.steps else "time"


@dataclass
class TrainRun:
    """One process's training run, as the loops see it."""

    cfg: ModelConfig
    opts: TrainOptions
    schedule: TrainSchedule
    dist: Dist
    run_dir: Path
    log: RunLog
    model: TPSMM
    full: "FullModel"
    ddp: nn.Module  # full, DDP-wrapped under torchrun
    optim: "Optimisers"
    clips: list
    image_size: int
    landmark_indices: torch.Tensor | None
    meta: dict
    progress: Progress
    checkpointer: Checkpointer
    stop: StopFlag = field(default_factory=StopFlag)

    @property
    def checkpoint_path(self) -> Path:
        return self.run_dir / CHECKPOINT

    @property
    def files(self) -> RunFiles:
        return RunFiles(self.run_dir)

    def snapshot(self) -> TrainingCheckpoint:
        """The checkpoint of the run as it is now."""
        return TrainingCheckpoint(
            config=yaml.safe_dump(self.cfg.to_yaml_dict(), sort_keys=False), config_name=self.cfg.name,
            models={n: m.state_dict() for n, m in self.model.submodules().items()},
            progress=Progress(**asdict(self.progress)), optimisers=self.optim.states(), rng=rng_state(),
            options=asdict(self.opts),
            landmark_indices=self.landmark_indices.tolist() if self.landmark_indices is not None else None,
            meta=self.meta)

    def save_checkpoint(self, reason: str) -> None:
        """Rank 0 writes ``checkpoint.pth`` (atomic) and the learning curve; every rank restarts the clock."""
        if self.dist.main:
            save_checkpoint(self.checkpoint_path, self.snapshot())
            plot_learning_curve(self.run_dir)
            p = self.progress
            self.log(f"checkpoint ({reason}): step {p.step}, epoch {p.epoch}, wall {p.wall / 60:.1f} min "
                     f"→ {self.checkpoint_path}")
        self.checkpointer.last = time.time()

    def checkpoint_if_due(self, reason: str | None = None) -> None:
        if self.checkpointer.due(self.progress.step):
            self.save_checkpoint(reason or self.checkpointer.reason)
