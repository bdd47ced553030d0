"""How well each TPS group of a landmark config describes the face's motion beyond its own five points.

    python -m splinecam.training.tps_groups --data runs/data/train [--config cpu-256] [--groups JSON]

A landmark config (``kp_detector_params.head: landmarks``) fits one thin-plate spline per group of five
face-mesh landmarks, driving → source, and the dense motion mixes those warps over the whole frame: the
forehead's TPS is what the hair above it gets, the jaw's what the neck gets. A group whose five points lie
nearly on one line (the forehead's upper arc, the brow line, the upper lip's contour) fixes its affine part
across that line from a pixel or two of spread, so landmark noise and the group's own non-rigid motion
become a large shear or stretch a few tens of pixels away. This tool measures it on prepared data
(``splinecam prepare-data`` output: each clip's (T,468,2) pixel landmarks): source = frame 0 of each clip,
driving = every ``--stride``-th of the first ``--max-frames`` frames, and for each group the error of its TPS
(the config's regularisation) on all 468 mesh points of the driving frame, mapped to the source, against
where those points really are there; per frame the median over the points, then the mean over frames.
A motion the face makes as a whole (a turn, a nod, a lean) is what the group has to carry to the rest of the
frame; the two lip groups and the chin also describe the mouth's own motion, so theirs is naturally larger.
``spread`` is the smaller over the larger singular value of the group's centred points in frame 0 (0: on
one line). training/BUNDLED.md quotes it.
"""

from __future__ import annotations

import argparse
import json
import sys
from dataclasses import dataclass
from pathlib import Path

import numpy as np

MESH_POINTS = 468


@dataclass(frozen=True)
class GroupFit:
    """One TPS group over a dataset: its landmark indices, the mean over driving frames of the median
    whole-mesh error (px at the data's size), the 95th percentile of those per-frame medians, the worst
    single point (px), and the mean spread of its points (0 = collinear, 1 = round)."""

    indices: tuple[int, ...]
    median_px: float
    p95_px: float
    worst_px: float
    spread: float


def load_pairs(data: Path, max_frames: int = 120, stride: int = 3) -> tuple[np.ndarray, np.ndarray, int]:
    """Source and driving landmarks of every clip of a prepare-data folder: (M,468,2) each, in grid
    coordinates ([-1, 1], pixel centres at the ends), and the frame size S."""
    from splinecam.engines.tpsmm.landmarks import landmarks_to_grid

    if not (data / "manifest.json").is_file():
        raise ValueError(f"{data} is not prepare-data output (no manifest.json): run splinecam prepare-data first")
    manifest = json.loads((data / "manifest.json").read_text())
    size = int(manifest["size"])
    sources, drivings = [], []
    for clip in manifest["clips"]:
        if not clip.get("landmarks_path"):
            raise ValueError(f"{data}: clip {clip['name']} has no landmarks (prepared with --no-landmarks?)")
        lm = np.load(data / clip["landmarks_path"])[:max_frames, :MESH_POINTS]
        for t in range(1, len(lm), stride):
            sources.append(lm[0])
            drivings.append(lm[t])
    if not sources:
        raise ValueError(f"{data}: no clip has two frames")
    return (landmarks_to_grid(np.stack(sources), size), landmarks_to_grid(np.stack(drivings), size), size)


def fit_group(indices: tuple[int, ...], source: np.ndarray, driving: np.ndarray, size: int,
              regularise: str = "kernel") -> GroupFit:
    """The whole-mesh error of one group's TPS: source, driving (M,468,2) grid coordinates."""
    import torch

    from splinecam.engines.tpsmm.geometry import solve_tps, tps_warp_points

    idx = list(indices)
    src = torch.from_numpy(source).double()
    drv = torch.from_numpy(driving).double()
    tps = solve_tps(drv[:, idx], src[:, idx], 1, regularise)
    warped = tps_warp_points(tps, drv)[:, 0]                              # (M,468,2)
    err = (warped - src).norm(dim=-1) * ((size - 1) / 2)                  # px
    per_frame = err.median(dim=1).values
    centred = source[:, idx] - source[:, idx].mean(axis=1, keepdims=True)
    sv = np.linalg.svd(centred, compute_uv=False)                         # (M,2)
    return GroupFit(tuple(int(i) for i in indices), float(per_frame.mean()), float(per_frame.quantile(0.95)),
                    float(err.max()), float(np.mean(sv[:, 1] / np.maximum(sv[:, 0], 1e-9))))


def no_motion_px(source: np.ndarray, driving: np.ndarray, size: int) -> float:
    """The same figure for no motion at all (each point stays where it is in the driving frame)."""
    err = np.linalg.norm(driving - source, axis=-1) * ((size - 1) / 2)
    return float(np.median(err, axis=1).mean())


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(prog="python -m splinecam.training.tps_groups", description=__doc__.split("\n")[0])
    ap.add_argument("--data", required=True, type=Path, help="prepare-data output folder (with landmarks)")
    ap.add_argument("--config", default="cpu-256", help="landmark config (name or YAML; default cpu-256)")
    ap.add_argument("--groups", help="JSON list of 5-index groups to measure instead of the config's (with its TPS system)")
    ap.add_argument("--max-frames", type=int, default=120)
    ap.add_argument("--stride", type=int, default=3)
    args = ap.parse_args(argv)
    from splinecam.engines.tpsmm.config import load_config

    from splinecam.engines.errors import SplinecamError

    try:
        cfg = load_config(args.config)
        if not cfg.landmark_keypoints:
            raise ValueError(f"{cfg.name} has no landmark keypoints")
        lm = list(cfg.keypoint.landmarks)
        per = len(lm) // cfg.num_tps
        groups = ([tuple(g) for g in json.loads(args.groups)] if args.groups
                  else [tuple(lm[i:i + per]) for i in range(0, len(lm), per)])
        regularise = cfg.dense_motion.tps_regularise     # --groups: measured with the config's TPS system too
        source, driving, size = load_pairs(args.data, args.max_frames, args.stride)
    except (OSError, ValueError, KeyError, SplinecamError) as exc:
        print(f"tps_groups: error: {exc}", file=sys.stderr)
        return 2
    print(f"{len(source)} driving frames; no motion: {no_motion_px(source, driving, size):.2f} px median mesh error")
    for g in groups:
        fit = fit_group(g, source, driving, size, regularise)
        print(f"{list(fit.indices)!s:32s} median {fit.median_px:6.2f} px | p95 {fit.p95_px:6.1f} | "
              f"worst {fit.worst_px:6.0f} | spread {fit.spread:.3f}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
