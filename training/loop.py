"""The main loop of ``train``: epochs of steps (:func:`train_step`), a ``losses.csv`` row per step, a
progress line with the ETA every ``--log-every`` steps, a visualisation every ``--vis-every``, an
``epochs.csv`` row and the lr schedulers' step per completed epoch, checkpoints when due.

Every random draw of a step (TPS dropout, the random TPS of the equivariance loss, the landmark
augmentation) depends only on (seed, step, rank): a resumed run repeats the killed run's steps exactly.
"""

from __future__ import annotations

import math
import time
from dataclasses import dataclass, field

import numpy as np
import torch

from splinecam.engines.errors import SplinecamError
from splinecam.engines.tpsmm.geometry import RandomTPS
from splinecam.training.context import TrainRun
from splinecam.training.loader import TrainData
from splinecam.training.runfiles import Eta, StepImages, save_visualisation
from splinecam.training.step import optimise

# the progress line's loss names (the CSVs keep the full ones)
_SHORT = {"equivariance_value": "equivariance", "warp_loss": "warp"}


@dataclass
class StepOutcome:
    """One main-loop step's weighted losses (floats), their sum, seconds, and what it generated."""

    losses: dict[str, float]
    total: float
    seconds: float
    generated: dict[str, torch.Tensor]


@dataclass
class EpochMeans:
    """Running sums of an epoch's losses (for its ``epochs.csv`` row)."""

    sums: dict[str, float] = field(default_factory=dict)
    count: int = 0

    def add(self, out: StepOutcome) -> None:
        for k, v in out.losses.items():
            self.sums[k] = self.sums.get(k, 0.0) + v
        self.sums["total"] = self.sums.get("total", 0.0) + out.total
        self.count += 1

    def means(self) -> dict[str, float]:
        return {k: v / self.count for k, v in self.sums.items()}


def train_step(run: TrainRun, batch: dict[str, torch.Tensor], rt_tps: torch.Generator) -> StepOutcome:
    """Forward, backward and update for the batch of step ``progress.step`` (+1 when done)."""
    opts, p, seed, rank = run.opts, run.progress, run.opts.seed, run.dist.rank
    t0 = time.time()
    batch = {k: v.to(opts.device) for k, v in batch.items()}
    torch.manual_seed(seed * 1_000_003 + p.step * 97 + rank)
    rt_tps.manual_seed(seed * 1_000_033 + p.step * 89 + rank)
    tp = run.schedule.transform_params
    transform = RandomTPS.sample(batch["driving"].shape[0], tp["sigma_affine"], tp["sigma_tps"],
                                 tp["points_tps"], generator=rt_tps, device=opts.device)
    losses, gen = run.ddp(batch, p.epoch, transform, aug_rng=np.random.default_rng([seed, p.step, rank]))
    loss = sum(losses.values())
    optimise(loss, run.model, run.optim, p.epoch >= run.schedule.bg_start, opts.freeze_keypoints)
    p.step += 1
    p.step_in_epoch += 1
    dt = time.time() - t0
    p.wall += dt
    total = float(loss.detach())
    if not math.isfinite(total):
        raise SplinecamError(f"loss became {total} at step {p.step}: lower --lr or use fp32 (no --bf16)")
    gen = {**gen, "source": batch["source"], "driving": batch["driving"]}
    return StepOutcome({k: float(v.detach()) for k, v in losses.items()}, total, dt, gen)


def _report_step(run: TrainRun, out: StepOutcome, total_steps: int, eta: Eta) -> None:
    """Rank 0: the step's CSV row, its progress line, its visualisation."""
    opts, p = run.opts, run.progress
    run.files.step_row(p.step, p.epoch, run.optim.lr, out.total, out.losses, out.seconds)
    if p.step % opts.log_every == 0 or p.step == 1:
        parts = " ".join(f"{_SHORT.get(k, k)} {v:.3f}" for k, v in out.losses.items())
        run.log(f"step {p.step}/{total_steps} ep {p.epoch} | loss {out.total:.3f} ({parts}) | "
                f"{out.seconds:.2f} s/step | ETA {eta.minutes(p.step, total_steps, p.wall):.0f} min")
    if opts.vis_every and (p.step % opts.vis_every == 0 or p.step == 1):
        g = {k: v.cpu() for k, v in out.generated.items()}
        save_visualisation(run.run_dir / "vis" / f"step-{p.step:06d}.png",
                           StepImages(g["source"], g["driving"], g["prediction"], g["kp_source"],
                                      g["kp_driving"], g["occlusion"]), run.cfg.num_tps)


def _end_epoch(run: TrainRun, means: EpochMeans) -> None:
    """A completed epoch: its ``epochs.csv`` row, the next epoch, the lr schedulers' step."""
    p = run.progress
    if run.dist.main and means.count:
        m = means.means()
        run.files.epoch_row(p.epoch, p.step, run.optim.lr, m)
        run.log(f"epoch {p.epoch} done: mean loss {m['total']:.4f} over {means.count} steps")
    p.epoch += 1
    p.step_in_epoch = 0
    run.optim.end_epoch()


def run_main_loop(run: TrainRun, data: TrainData) -> None:
    """Steps until ``total_steps`` or a signal; a completed epoch ends with :func:`_end_epoch`."""
    p = run.progress
    if run.opts.freeze_keypoints and run.model.kp_detector is not None:  # trained by the warm start; fixed from here
        run.model.kp_detector.eval().requires_grad_(False)
    eta = Eta(start_step=p.step, warm_wall=p.wall)
    rt_tps = torch.Generator()
    while p.step < data.total_steps and not run.stop:
        means = EpochMeans()
        for batch in data.epoch_batches(p.epoch, p.step_in_epoch):
            out = train_step(run, batch, rt_tps)
            means.add(out)
            if run.dist.main:
                _report_step(run, out, data.total_steps, eta)
            if p.step >= data.total_steps or run.stop:
                return
            run.checkpoint_if_due()
        _end_epoch(run, means)
