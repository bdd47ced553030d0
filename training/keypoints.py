"""Landmark supervision of the keypoint detector: face-mesh targets under heavy augmentation.

With a handful of training identities, a keypoint detector regressed onto face-mesh landmarks of
the plain frames learns each identity's average face and barely moves on a face it never saw
(measured on ``webcam/lp-d12``: the detector's keypoint motion was 0.28 of the landmarks' motion).
What makes it localise the face instead is augmentation that breaks every shortcut:

- a random similarity transform of the frame (rotation, zoom, shift), the landmarks moved along;
- a horizontal flip, with the landmarks *re-indexed* by the face mesh's left/right mirror map (a
  flipped left eye corner is a right eye corner), which doubles the identities;
- colour (brightness, contrast, saturation, per-channel gain), blur, noise and a random cut-out.

:func:`landmark_batch` draws frames with known landmarks (random clip first: identity sampling);
:func:`augment` applies the above, deterministically for a given ``numpy`` generator (the trainer
seeds it with (seed, step, rank), so a resumed run sees the same batches). Landmarks are in grid
coordinates ([-1, 1], x then y), the convention of the keypoints.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np
import torch
import torch.nn.functional as F

from splinecam.engines.tpsmm.landmarks import landmarks_to_grid
from splinecam.training.data import Clip, DataError


@dataclass(frozen=True)
class LandmarkAugmentation:
    """Ranges of :func:`augment` (each drawn uniformly per sample)."""

    rotation_deg: float = 30.0
    zoom: float = 0.25  # scale × [1 − zoom, 1 + zoom]
    shift: float = 0.2  # grid units
    flip: bool = True
    brightness: float = 0.2
    contrast: tuple[float, float] = (0.6, 1.4)
    saturation: tuple[float, float] = (0.3, 1.5)
    channel_gain: float = 0.15
    blur_p: float = 0.2
    cutout_p: float = 0.3
    noise: float = 0.03


def mirror_permutation(face: np.ndarray) -> np.ndarray:
    """(468,) index map: landmark i of a horizontally flipped face is landmark ``perm[i]`` of the
    original. Found on a frontal mean face (468,2) (e.g. :func:`splinecam.training.landmarks.mean_face`) as
    the nearest landmark to each one's mirror image about the face's vertical midline."""
    f = face - face.mean(axis=0)
    f[:, 0] -= np.median(f[:, 0])
    mirrored = f * np.array([-1.0, 1.0])
    return np.argmin(((f[None] - mirrored[:, None]) ** 2).sum(-1), axis=1).astype(np.int64)


def landmark_batch(clips: list[Clip], batch: int, size: int, rng: np.random.Generator
                   ) -> tuple[torch.Tensor, torch.Tensor]:
    """Random frames with landmarks: images (N,3,size,size) float32 in [0,1], landmarks (N,468,2) grid."""
    usable = [c for c in clips if c.landmarks is not None and np.isfinite(c.landmarks).all(axis=(1, 2)).any()]
    if not usable:
        raise DataError("no clip has face-mesh landmarks: run prepare-data without --no-landmarks")
    images, targets = [], []
    while len(images) < batch:
        clip = usable[int(rng.integers(len(usable)))]
        t = int(rng.integers(len(clip.frames)))
        lm = clip.landmarks[t]
        if not np.isfinite(lm).all():
            continue
        frame = np.asarray(clip.frames[t])
        src = frame.shape[0]
        if src != size:
            import cv2

            frame = cv2.resize(frame, (size, size), interpolation=cv2.INTER_AREA)
        images.append(frame)
        targets.append(landmarks_to_grid(lm, src))
    x = torch.from_numpy(np.stack(images)).permute(0, 3, 1, 2).float() / 255
    return x, torch.from_numpy(np.stack(targets))


def augment(images: torch.Tensor, landmarks: torch.Tensor, mirror: torch.Tensor, rng: np.random.Generator,
            aug: LandmarkAugmentation = LandmarkAugmentation()) -> tuple[torch.Tensor, torch.Tensor]:
    """Augmented copies: images (N,3,S,S) in [0,1], landmarks (N,468,2) grid (NaN allowed) →
    the same shapes, landmarks moved with the image (see the module docstring)."""
    n, _, s, _ = images.shape
    x, lm = images.clone(), landmarks.clone().float()
    if aug.flip:
        flip = torch.from_numpy(rng.random(n) < 0.5)
        if bool(flip.any()):
            x[flip] = x[flip].flip(-1)
            flipped = lm[flip][:, mirror]
            flipped[..., 0] = -flipped[..., 0]
            lm[flip] = flipped
    u = torch.from_numpy(rng.uniform(-1, 1, (n, 4))).float()
    angle = u[:, 0] * aug.rotation_deg * math.pi / 180
    zoom = 1 + u[:, 1] * aug.zoom
    cos, sin = torch.cos(angle) * zoom, torch.sin(angle) * zoom
    a = torch.stack([torch.stack([cos, -sin], 1), torch.stack([sin, cos], 1)], 1)  # (N,2,2)
    t = (u[:, 2:] * aug.shift)[:, :, None]  # (N,2,1)
    # output point q samples the input at a·q + t, so a landmark p moves to a⁻¹(p − t)
    grid = F.affine_grid(torch.cat([a, t], 2), [n, 3, s, s], align_corners=True)
    x = F.grid_sample(x, grid, padding_mode="border", align_corners=True)
    lm = torch.linalg.solve(a, lm.transpose(1, 2) - t).transpose(1, 2)

    def draw(lo, hi, shape):
        return torch.from_numpy(rng.uniform(lo, hi, shape)).float()

    mean = x.mean(dim=(1, 2, 3), keepdim=True)
    x = (x - mean) * draw(*aug.contrast, (n, 1, 1, 1)) + mean + draw(-aug.brightness, aug.brightness, (n, 1, 1, 1))
    gray = x.mean(dim=1, keepdim=True)
    x = gray + (x - gray) * draw(*aug.saturation, (n, 1, 1, 1))
    x = x * draw(1 - aug.channel_gain, 1 + aug.channel_gain, (n, 3, 1, 1))
    for i in range(n):
        if rng.random() < aug.blur_p:
            k = int(rng.choice([3, 5, 7]))
            x[i] = F.avg_pool2d(x[i:i + 1], k, 1, k // 2, count_include_pad=False)[0]
        if rng.random() < aug.cutout_p:
            h, w = (rng.integers(s // 13, s // 3, 2)).tolist()
            y0, x0 = int(rng.integers(0, s - h)), int(rng.integers(0, s - w))
            x[i, :, y0:y0 + h, x0:x0 + w] = torch.from_numpy(rng.random(3)).float().view(3, 1, 1)
    x = x + torch.from_numpy(rng.standard_normal(x.shape, dtype=np.float32)) * float(rng.uniform(0, aug.noise))
    return x.clamp(0, 1), lm


def landmark_l1(kp: torch.Tensor, landmarks: torch.Tensor, indices: torch.Tensor) -> torch.Tensor:
    """mean |kp − landmarks[:, indices]| over samples whose chosen landmarks are known and inside the
    frame (an augmented face can be pushed partly out). kp (N,K,2), landmarks (N,468,2), indices (K,)."""
    target = landmarks[:, indices].to(kp.device, torch.float32)
    valid = torch.isfinite(target).all(dim=2).all(dim=1) & (target.abs() <= 1.05).all(dim=2).all(dim=1)
    if not bool(valid.any()):
        return kp.sum() * 0
    return (kp[valid].float() - target[valid]).abs().mean()
