"""``train-avd``: the AVD network (animation via disentanglement, official ``train_avd.py``).

The trained keypoint detector is frozen. For pairs (frame A, frame B) of the same clip:
kp_source = kp(A), kp_driving = kp(B), kp_random = random anisotropic scaling of kp_driving
(x and y each by a factor in [1−s, 1+s], ``random_scale``); the AVD network must reconstruct
kp_driving from (kp_source, kp_random): it learns to take the face shape (identity) from the source
and only the pose from the driving keypoints. Loss: lambda_shift · mean|kp_driving − AVD(kp_source,
kp_random)|. Adam(lr, betas 0.5/0.999), MultiStepLR(epoch_milestones, 0.1) per epoch.

Keypoints of every frame are computed once up front (the detector is frozen), so an AVD step is
a few small matrix products. The run directory holds ``checkpoint.pth`` (AVD weights, optimizer,
scheduler, step, epoch, RNG; atomic), ``log.txt`` and ``losses.csv``.
"""

from __future__ import annotations

import math
import time
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
import yaml

from splinecam.engines.errors import SplinecamError
from splinecam.engines.tpsmm.networks import AVDNetwork
from splinecam.training.data import load_clips
from splinecam.training.losses import random_scale
from splinecam.training.checkpoint import (CHECKPOINT, model_from_training_checkpoint, read_training_checkpoint,
                                          save_checkpoint)
from splinecam.training.runfiles import RunLog, append_csv, truncate_csv


@dataclass
class AVDSchedule:
    """Official ``train_avd_params``, resolved."""

    num_epochs: int
    num_repeats: int
    batch_size: int
    epoch_milestones: list[int]
    lr: float
    lambda_shift: float
    random_scale: float


def load_trained_model(path: str | Path):
    """The main-stage model: a run dir, its checkpoint.pth, or a .safetensors / .pth.tar."""
    p = Path(path)
    if p.is_dir():
        p = p / CHECKPOINT
    if p.suffix == ".pth" and not p.name.endswith(".pth.tar"):
        return model_from_training_checkpoint(read_training_checkpoint(p)), p
    from splinecam.engines.tpsmm.checkpoint import load_checkpoint

    return load_checkpoint(p).model, p


@torch.no_grad()
def clip_keypoints(kp_detector, clips, image_size: int, batch: int = 32) -> list[torch.Tensor]:
    """Keypoints of every frame of every clip: list of (T,K,2)."""
    import cv2

    kp_detector.eval()
    out = []
    for clip in clips:
        kps = []
        for i in range(0, len(clip.frames), batch):
            frames = np.array(clip.frames[i:i + batch])
            if frames.shape[1] != image_size:
                frames = np.stack([cv2.resize(f, (image_size, image_size), interpolation=cv2.INTER_AREA) for f in frames])
            x = torch.from_numpy(frames).permute(0, 3, 1, 2).float() / 255
            kps.append(kp_detector(x))
        out.append(torch.cat(kps))
    return out


def train_avd(args) -> Path:
    if args.threads:
        torch.set_num_threads(args.threads)
    run_dir = Path(args.out)
    run_dir.mkdir(parents=True, exist_ok=True)
    ckpt_path = run_dir / CHECKPOINT
    log = RunLog(run_dir, True)
    if ckpt_path.exists() and not args.resume:
        raise SplinecamError(f"{run_dir} already holds an AVD run: pass --resume, or another --out")
    model, src_path = load_trained_model(args.checkpoint)
    cfg = model.config
    tp = cfg.train_avd_params or {}
    sched = AVDSchedule(int(args.epochs or tp.get("num_epochs", 200)), int(tp.get("num_repeats", 300)),
                        int(args.batch_size or tp.get("batch_size", 256)),
                        [int(m) for m in tp.get("epoch_milestones", [])], float(tp.get("lr", 1e-3)),
                        float(tp.get("lambda_shift", 1)), float(tp.get("random_scale", 0.25)))
    image_size = args.image_size or cfg.image_size
    clips = load_clips(args.data)
    t0 = time.time()
    kps = clip_keypoints(model.kp_detector, clips, image_size)
    log(f"AVD stage: keypoints of {sum(len(k) for k in kps)} frames from {src_path} in {time.time() - t0:.0f} s "
        f"(image size {image_size})")

    torch.manual_seed(args.seed)
    avd = AVDNetwork(cfg.num_tps, cfg.avd.id_bottle_size, cfg.avd.pose_bottle_size)
    optimizer = torch.optim.Adam(avd.parameters(), lr=sched.lr, betas=(0.5, 0.999))
    scheduler = torch.optim.lr_scheduler.MultiStepLR(optimizer, sched.epoch_milestones, gamma=0.1)
    pairs_per_epoch = len(clips) * sched.num_repeats
    steps_per_epoch = max(1, pairs_per_epoch // sched.batch_size)
    step, epoch, wall = 0, 0, 0.0
    if args.resume:
        data = torch.load(ckpt_path, map_location="cpu", weights_only=True)
        avd.load_state_dict(data["avd_network"])
        optimizer.load_state_dict(data["optimizer"])
        scheduler.load_state_dict(data["scheduler"])
        step, epoch, wall = data["step"], data["epoch"], data["wall_time"]
        torch.set_rng_state(data["rng"])
        truncate_csv(run_dir / "losses.csv", step)
        log(f"resumed AVD run at step {step}, epoch {epoch}")
    total = sched.num_epochs * steps_per_epoch
    if args.max_steps:
        total = min(total, args.max_steps)
    log(f"AVD: {len(clips)} clips, batch {sched.batch_size}, {steps_per_epoch} steps/epoch, {total} steps, "
        f"lr {sched.lr}, random_scale {sched.random_scale}")

    def payload():
        return {"format": "splinecam-avd", "avd_network": avd.state_dict(), "optimizer": optimizer.state_dict(),
                "scheduler": scheduler.state_dict(), "step": step, "epoch": epoch, "wall_time": wall,
                "rng": torch.get_rng_state(), "source_checkpoint": str(src_path),
                "config": yaml.safe_dump(cfg.to_yaml_dict(), sort_keys=False)}

    last = time.time()
    avd.train()
    while step < total:
        t0 = time.time()
        g = torch.Generator().manual_seed(args.seed * 1_000_003 + step)
        clip_idx = torch.randint(len(clips), (sched.batch_size,), generator=g)
        src_kp, drv_kp = [], []
        for c in clip_idx.tolist():
            n = len(kps[c])
            i, j = torch.randint(n, (2,), generator=g).tolist()
            src_kp.append(kps[c][i])
            drv_kp.append(kps[c][j])
        kp_source, kp_driving = torch.stack(src_kp), torch.stack(drv_kp)
        kp_random = random_scale(kp_driving, sched.random_scale, generator=g)
        rec = avd(kp_source, kp_random)
        loss = sched.lambda_shift * (kp_driving - rec).abs().mean()
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        optimizer.step()
        step += 1
        wall += time.time() - t0
        if not math.isfinite(float(loss.detach())):
            raise SplinecamError(f"AVD loss became {float(loss.detach())} at step {step}")
        append_csv(run_dir / "losses.csv", ["step", "epoch", "lr", "reconstruction_kp"],
                    [step, epoch, f"{optimizer.param_groups[0]['lr']:.3g}", f"{float(loss.detach()):.6f}"])
        if step % args.log_every == 0 or step == 1:
            log(f"AVD step {step}/{total} ep {epoch} | kp reconstruction L1 {float(loss.detach()):.5f}")
        if step % steps_per_epoch == 0:
            epoch += 1
            scheduler.step()
        if time.time() - last > args.checkpoint_minutes * 60:
            save_checkpoint(ckpt_path, payload())
            last = time.time()
    save_checkpoint(ckpt_path, payload())
    log(f"AVD done: {step} steps, {wall / 60:.1f} min → {ckpt_path}")
    return ckpt_path


def read_avd_checkpoint(path: str | Path) -> dict:
    p = Path(path)
    if p.is_dir():
        p = p / CHECKPOINT
    if not p.is_file():
        raise SplinecamError(f"no AVD checkpoint at {p}: run train-avd first")
    data = torch.load(p, map_location="cpu", weights_only=True)
    if not isinstance(data, dict) or "avd_network" not in data:
        raise SplinecamError(f"{p} is not a train-avd checkpoint")
    return data


def run(args) -> int:
    """CLI entry of ``train-avd``."""
    path = train_avd(args)
    print(f"checkpoint: {path}")
    return 0
