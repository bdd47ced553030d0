"""The warm start (``--warmstart-steps``): before the main loop, the keypoint detector alone is regressed
onto face-mesh landmarks (:mod:`splinecam.training.landmarks`; with ``--landmark-augment`` on heavily
augmented frames, :mod:`splinecam.training.keypoints`), with a cosine-decayed lr. Every draw is a
function of (seed, warm step, rank), so a resumed warm start repeats the killed one."""

from __future__ import annotations

import math
import time

import numpy as np

from splinecam.training.context import TrainRun
from splinecam.training.keypoints import landmark_batch


def warmstart_lr(peak: float, warm_step: int, steps: int) -> float:
    return peak * 0.5 * (1 + math.cos(math.pi * warm_step / steps))


def run_warmstart(run: TrainRun) -> None:
    """Warm-start steps until ``--warmstart-steps`` are done or a signal stops the run."""
    opts, p = run.opts, run.progress
    while p.warm_step < opts.warmstart_steps and not run.stop:
        t0 = time.time()
        rng = np.random.default_rng([opts.seed, p.warm_step, run.dist.rank])
        images, lms = landmark_batch(run.clips, opts.warmstart_batch, run.image_size, rng)
        for group in run.optim.warm.param_groups:
            group["lr"] = warmstart_lr(opts.warmstart_lr, p.warm_step, opts.warmstart_steps)
        batch = {"images": images.to(opts.device), "landmarks": lms.to(opts.device)}
        losses, _ = run.ddp(batch, 0, None, aug_rng=rng, warmstart=True)
        run.optim.warm.zero_grad(set_to_none=True)
        losses["landmark"].backward()
        run.optim.warm.step()
        p.warm_step += 1
        p.wall += time.time() - t0
        if run.dist.main and (p.warm_step % opts.log_every == 0 or p.warm_step == opts.warmstart_steps):
            v = float(losses["landmark"].detach())
            run.files.warmstart_row(p.warm_step, v, p.wall)
            run.log(f"warm-start {p.warm_step}/{opts.warmstart_steps}: landmark L1 {v:.4f} (grid units)")
        run.checkpoint_if_due("time")
