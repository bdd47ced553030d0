"""Where a model's reconstruction error is: inside the face, a ring around it, or the rest of the frame.

    python -m splinecam.training.error_regions --data runs/data/val [--checkpoint PATH] [--max-frames 60]

The same reconstruction as ``splinecam evaluate`` (source = frame 0, standard mode, each frame's
face-mesh keypoints for landmark configs), its per-pixel L1 split by region of each driving frame: the
**face** (the convex hulls of the face-mesh landmarks of that frame and of the source, together), a
**ring** ``--ring`` px wide around it (hair line, ears, jaw line) and the **rest** (hair, shoulders,
background: what face landmarks do not drive), each beside no motion's error there; and the part of
the rest that does not change (no motion's error below ``--static``), where the model can only lose. For
the CPU warp-refine generator also the blend mask (the warped source's weight in the output). Each
region's figure is its share of the whole frame's mean, so the three add up to the clip's L1.
This is what training/BUNDLED.md's "Where the error is" quotes.
"""

from __future__ import annotations

import argparse
import sys
from dataclasses import dataclass

import numpy as np

REGIONS = ("face", "ring", "rest", "rest_static")


@dataclass
class RegionSplit:
    """One clip: per region (REGIONS) the model's and no motion's L1 summed there / all pixels, and the
    region's share of the pixels; the blend mask's values (None without a blend mask)."""

    name: str
    frames: int
    model: dict[str, float]
    no_motion: dict[str, float]
    share: dict[str, float]
    masks: np.ndarray | None


def region_masks(shape: tuple[int, int], landmarks: list[np.ndarray], ring_px: int) -> dict[str, np.ndarray]:
    """Boolean (H,W) face / ring / rest masks from (468,2) pixel landmark sets (the union of their hulls)."""
    import cv2

    face = np.zeros(shape, np.uint8)
    for lm in landmarks:
        cv2.fillConvexPoly(face, cv2.convexHull(lm.astype(np.int32)), 1)
    near = cv2.dilate(face, np.ones((2 * ring_px + 1, 2 * ring_px + 1), np.uint8))
    return {"face": face > 0, "ring": (near > 0) & (face == 0), "rest": near == 0}


def split_clip(model, name: str, frames: np.ndarray, mesh, ring_px: int = 20, static: float = 0.04,
               batch_size: int = 8) -> RegionSplit:
    """The region split of one clip (T,S,S,3) uint8."""
    from splinecam.training.evaluate import mesh_keypoints, reconstruct

    landmarks = [mesh.landmarks(f) for f in frames]
    keypoints = mesh_keypoints(model, landmarks, frames.shape[1]) if model.kp_detector is None else None
    masks: list[np.ndarray] = []
    pred = reconstruct(model, frames, batch_size, keypoints, blend_masks=masks)
    real = frames.astype(np.float32) / 255
    sums = {k: np.zeros(2) for k in REGIONS}
    pixels = {k: 0 for k in REGIONS}
    for t in range(len(frames)):
        found = [lm for lm in (landmarks[t], landmarks[0]) if lm is not None]
        regions = region_masks(frames.shape[1:3], found, ring_px)
        err_model = np.abs(pred[t] - real[t]).mean(-1)
        err_still = np.abs(real[0] - real[t]).mean(-1)
        regions["rest_static"] = regions["rest"] & (err_still < static)
        for k, m in regions.items():
            sums[k] += (err_model[m].sum(), err_still[m].sum())
            pixels[k] += int(m.sum())
    n = pred[..., 0].size
    return RegionSplit(name, len(frames), {k: float(v[0] / n) for k, v in sums.items()},
                       {k: float(v[1] / n) for k, v in sums.items()}, {k: pixels[k] / n for k in REGIONS},
                       np.concatenate(masks) if masks else None)


def main(argv: list[str] | None = None) -> int:
    from splinecam.engines.faces.mesh import FaceMesh
    from splinecam.training.evaluate import load_items, load_model

    ap = argparse.ArgumentParser(prog="python -m splinecam.training.error_regions", description=__doc__.split("\n")[0])
    ap.add_argument("--data", required=True, help="prepare-data output, a video or a folder of videos")
    ap.add_argument("--checkpoint", help="weights (default: the bundled cpu-256)")
    ap.add_argument("--max-frames", type=int, default=60)
    ap.add_argument("--ring", type=int, default=20, help="ring width in px at the model's size (default 20)")
    ap.add_argument("--static", type=float, default=0.04, help="no-motion L1 below which a pixel is static")
    args = ap.parse_args(argv)
    model, desc = load_model(args.checkpoint)
    size = model.config.image_size
    splits = []
    with FaceMesh(static=True) as mesh:
        for name, frames in load_items(args.data, size):
            s = split_clip(model, name, frames[: args.max_frames], mesh, args.ring, args.static)
            splits.append(s)
            print(f"{name}: " + "; ".join(f"{k} {s.model[k]:.4f} (no motion {s.no_motion[k]:.4f}, "
                                            f"{100 * s.share[k]:.0f} % of px)" for k in REGIONS))
    mean = {k: (np.mean([s.model[k] for s in splits]), np.mean([s.no_motion[k] for s in splits])) for k in REGIONS}
    total = sum(mean[k][0] for k in ("face", "ring", "rest"))
    print(f"{desc}, mean of {len(splits)} clips: " + "; ".join(
        f"{k} {m:.4f} vs no motion {nm:.4f}" + (f" ({100 * m / total:.0f} % of the model's L1)" if k != "rest_static" else "")
        for k, (m, nm) in mean.items()))
    masks = [s.masks for s in splits if s.masks is not None]
    if masks:
        allm = np.concatenate([m.ravel() for m in masks])
        p1, p5, p50 = np.percentile(allm, [1, 5, 50])
        print(f"blend mask (the warped source's weight): 1st / 5th / 50th percentile {p1:.3f} / {p5:.3f} / {p50:.3f}; "
              f"below 0.9 on {100 * (allm < 0.9).mean():.1f} % of pixels")
    return 0


def _main() -> int:
    from splinecam.engines.errors import SplinecamError

    try:
        return main()
    except SplinecamError as err:  # a missing or faceless --data, an unreadable --checkpoint: one line
        print(f"error_regions: error: {err}", file=sys.stderr)
        return 2


if __name__ == "__main__":
    raise SystemExit(_main())
