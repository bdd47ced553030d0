"""``train``: the TPSMM training recipe (paper §3.3, official ``train.py``), resumable, DDP-ready.

This module sets a run up and hands it to the loops; the pieces live beside it:

- :mod:`~splinecam.training.options` — ``TrainOptions`` (the command line) and ``TrainSchedule`` (the
  config's ``train_params``, resolved and checked);
- :mod:`~splinecam.training.step` — ``FullModel`` (per step: keypoints of source and driving,
  background affine from ``bg_start``, dense motion with TPS dropout, inpainting; losses: perceptual
  pyramid, equivariance with a random TPS, warp, background, and our optional pixel pyramid L1 and
  landmark regression), the optimisers (Adam(lr, betas 0.5/0.999, weight decay 1e-4) over keypoint +
  dense motion + inpainting, a second Adam for the background predictor, MultiStepLR(epoch_milestones,
  0.1) per epoch) and the update with gradient clipping (inf norm ≤ 10), as the official code does;
- :mod:`~splinecam.training.warmstart` — the optional warm start of the keypoint detector on face-mesh
  landmarks (``--warmstart-steps``; ``--freeze-keypoints`` then keeps it fixed in the main loop);
- :mod:`~splinecam.training.loop` — the main loop; :mod:`~splinecam.training.loader` — its batches;
- :mod:`~splinecam.training.checkpoint` — ``checkpoint.pth`` (typed; every earlier file still loads);
- :mod:`~splinecam.training.runfiles` — ``log.txt``, ``losses.csv`` (per step), ``epochs.csv`` (per epoch
  means), ``warmstart.csv``, the ETA, ``learning_curve.png``, ``vis/step-NNNNNN.png``;
- :mod:`~splinecam.training.distributed` — DDP set-up; :mod:`~splinecam.training.context` — what the
  loops share; :mod:`~splinecam.training.init_weights` — ``--init``.

``--resume`` continues from ``checkpoint.pth`` exactly (data order and augmentation are a function of
seed/epoch/index, so the remaining batches are the ones the killed run would have seen). Under
``torchrun`` (or with WORLD_SIZE/RANK set) the run is data-parallel (gloo on CPU, nccl on CUDA); the
batch size is global; rank 0 writes everything. ``--bf16`` autocasts on the run's device (CPU or CUDA).
"""

from __future__ import annotations

import os
import time
import random
from pathlib import Path

import numpy as np
import torch
import yaml

from splinecam.engines.errors import SplinecamError
from splinecam.engines.interrupts import Interrupted
from splinecam.engines.tpsmm.config import ModelConfig, check_image_size, load_config
from splinecam.engines.tpsmm.networks import TPSMM
from splinecam.training.checkpoint import CHECKPOINT, Progress, TrainingCheckpoint, read_training_checkpoint, set_rng_state
from splinecam.training.context import Checkpointer, TrainRun
from splinecam.training.data import load_clips
from splinecam.training.distributed import Dist, init_distributed, shutdown_distributed
from splinecam.training.init_weights import init_weights_from
from splinecam.training.keypoints import mirror_permutation
from splinecam.training.landmarks import choose_landmarks, mean_face
from splinecam.training.loader import build_train_data
from splinecam.training.loop import run_main_loop
from splinecam.training.options import TrainOptions, TrainSchedule, options_from_args, with_train_params
from splinecam.training.runfiles import RunLog
from splinecam.training.step import FullModel, Optimisers
from splinecam.training.vgg import build_perceptual_net
from splinecam.training.warmstart import run_warmstart


def _open_run_dir(opts: TrainOptions, d: Dist) -> tuple[Path, RunLog, TrainingCheckpoint | None]:
    """The run directory (created by rank 0), its log, and the checkpoint to resume from."""
    run_dir = Path(opts.out)
    ckpt_path = run_dir / CHECKPOINT
    if d.main:
        run_dir.mkdir(parents=True, exist_ok=True)
    d.barrier()
    resume = None
    if opts.resume:
        resume = read_training_checkpoint(ckpt_path)
        resume.check_resumable(str(ckpt_path))
    elif d.main and ckpt_path.exists():
        raise SplinecamError(f"{run_dir} already holds a run: pass --resume to continue it, or another --out")
    return run_dir, RunLog(run_dir, d.main), resume


def _landmarks(cfg: ModelConfig, opts: TrainOptions, schedule: TrainSchedule, clips,
               resume: TrainingCheckpoint | None, init_indices) -> tuple[torch.Tensor | None, torch.Tensor | None]:
    """The face-mesh landmark of each keypoint (landmark supervision) and the mirror map, or (None, None)."""
    landmark_indices = None
    if resume is not None and resume.landmark_indices is not None:
        landmark_indices = torch.as_tensor(resume.landmark_indices, dtype=torch.long)
    elif init_indices is not None:  # keep the keypoint ↔ landmark assignment of the initialising run
        landmark_indices = torch.as_tensor(init_indices, dtype=torch.long)
    elif opts.warmstart_steps or schedule.loss_weights.get("landmark"):
        landmark_indices = torch.empty(0, dtype=torch.long)  # chosen below, on the data's mean face
    if landmark_indices is None:
        return None, None
    face = mean_face([c.landmarks for c in clips])
    if not landmark_indices.numel():
        landmark_indices = torch.from_numpy(choose_landmarks(face, cfg.num_tps))
    return landmark_indices, torch.from_numpy(mirror_permutation(face))


def _new_model(cfg: ModelConfig, opts: TrainOptions, resume, log: RunLog) -> tuple[TPSMM, str | None, list | None]:
    """The networks to train (AVD is trained by train-avd), with ``--init``'s weights on a new run."""
    model = TPSMM(cfg)
    model.avd_network = None
    if not opts.init or resume:
        return model, None, None
    loaded = init_weights_from(model, opts.init)
    for name, groups in loaded.fresh.items():
        log(f"--init {loaded.path}: {name} initialised except {', '.join(groups)} (not in it: trained from scratch)")
    return model, loaded.path, loaded.landmark_indices


def _restore(run: TrainRun, ckpt: TrainingCheckpoint) -> None:
    """Weights, optimisers, counters and RNG of the checkpoint; logs after it dropped (redone)."""
    for name, module in run.model.submodules().items():
        module.load_state_dict(ckpt.models[name])
    run.optim.load(ckpt.optimisers)
    if run.opts.epoch_milestones is not None:  # a resumed run may be given a new (e.g. shorter) schedule
        run.optim.reschedule(run.schedule.epoch_milestones, ckpt.progress.epoch, run.schedule.lr)
    run.progress = Progress(**vars(ckpt.progress))
    set_rng_state(ckpt.rng)
    p = run.progress
    if run.dist.main:
        run.files.truncate_after(p.step, p.epoch, p.warm_step)
    run.log(f"resumed from {run.checkpoint_path}: step {p.step}, epoch {p.epoch} (+{p.step_in_epoch} steps), "
            f"warm-start step {p.warm_step}")


def _seed(seed: int) -> None:
    torch.manual_seed(seed)
    np.random.seed(seed)
    random.seed(seed)


def _prepare(cfg: ModelConfig, opts: TrainOptions) -> tuple[TrainRun, TrainingCheckpoint | None, str | None]:
    """Everything up to the first step: config, data, model, losses, optimisers (not yet restored)."""
    d = init_distributed(opts.device)
    if opts.threads:
        torch.set_num_threads(opts.threads)
    run_dir, log, resume = _open_run_dir(opts, d)
    if resume is not None:
        cfg = resume.model_config(cfg.name)
    if opts.train_param:
        cfg = with_train_params(cfg, opts.train_param)
    schedule = TrainSchedule.from_config(cfg, opts)
    image_size = check_image_size(cfg, opts.image_size or cfg.image_size, "--image-size")
    _seed(opts.seed)
    clips = [clip for folder in opts.data for clip in load_clips(folder)]
    if cfg.landmark_keypoints and (opts.warmstart_steps or opts.freeze_keypoints or opts.landmark_augment):
        raise SplinecamError(f"{cfg.name} takes face-mesh landmarks as keypoints (no keypoint network): "
                             f"--warmstart-steps, --freeze-keypoints and --landmark-augment do not apply")
    if cfg.generator.kind == "keypoint-mask" and schedule.loss_weights.get("warp_loss"):
        raise SplinecamError(f"{cfg.name} warps nothing (keypoint masks, no motion field): the warp loss does not "
                             f"apply; set loss_weights.warp_loss: 0")
    model, init_from, init_indices = _new_model(cfg, opts, resume, log)
    perceptual = build_perceptual_net(opts.vgg_weights, opts.perceptual_width)
    landmark_indices, mirror = _landmarks(cfg, opts, schedule, clips, resume, init_indices)
    full = FullModel(model, schedule, perceptual, opts.bf16, landmark_indices, opts.landmark_augment,
                     mirror, opts.freeze_keypoints).to(opts.device)
    for m in model.submodules().values():
        m.train()
    optim = Optimisers.build(model, schedule, opts.warmstart_lr)
    if resume is not None:
        init_from = resume.meta.get("init")
    meta = {"config_name": cfg.name, "perceptual": perceptual.kind, "image_size": image_size,
            "world_size": d.world, "bf16": opts.bf16, "init": init_from}
    run = TrainRun(cfg, opts, schedule, d, run_dir, log, model, full, full, optim, clips, image_size,
                   landmark_indices, meta, Progress(), Checkpointer(opts.checkpoint_minutes, opts.checkpoint_steps))
    return run, resume, mirror


def train(cfg: ModelConfig, opts: TrainOptions) -> Path:
    """Run (or resume) a training run; returns the path of the last checkpoint."""
    run, resume, mirror = _prepare(cfg, opts)
    if resume is not None:
        _restore(run, resume)
    d, cfg = run.dist, run.cfg
    run.ddp = d.wrap(run.full)
    if cfg.landmark_keypoints and mirror is None:
        mirror = torch.from_numpy(mirror_permutation(mean_face([c.landmarks for c in run.clips])))
    data = build_train_data(cfg, run.clips, run.image_size, run.schedule, d, opts.seed,
                            mirror.numpy() if cfg.landmark_keypoints else None, opts.max_steps)
    if d.main:
        (run.run_dir / "config.yaml").write_text(yaml.safe_dump(cfg.to_yaml_dict(), sort_keys=False))
        run.log(f"run {run.run_dir}: config {cfg.name}, {len(run.clips)} clips, {len(data.dataset)} pairs/epoch, "
                f"{data.steps_per_epoch} steps/epoch, batch {run.schedule.batch_size} ({d.world} process(es)), "
                f"image size {run.image_size}, device {opts.device}, threads {torch.get_num_threads()}, bf16 {opts.bf16}")
        run.log(f"perceptual loss network: {run.meta['perceptual']}")
        run.log(f"loss weights: {run.schedule.loss_weights}")
    run.checkpointer.last = time.time()
    with run.stop.installed():
        run_warmstart(run)
        run_main_loop(run, data)
    run.save_checkpoint("stopped by signal" if run.stop else "end")
    d.barrier()
    run.log(f"done: {run.progress.step} steps, {run.progress.wall / 60:.1f} min of training")
    if run.stop.signum is not None:  # checkpointed: now exit as the signal asks (130 / 143 / 129)
        raise Interrupted(run.stop.signum)
    return run.checkpoint_path


def run(args) -> int:
    """CLI entry of ``train``."""
    cfg = load_config(args.config)
    opts = options_from_args(args)
    try:
        path = train(cfg, opts)
    finally:
        shutdown_distributed()
    if int(os.environ.get("RANK", "0")) == 0:
        print(f"checkpoint: {path}")
    return 0
