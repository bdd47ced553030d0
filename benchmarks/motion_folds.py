"""Where the dense motion folds: the share of its sampling grid that doubles back over itself, per frame.

    python -m splinecam.benchmarks.motion_folds --source IMG --driving CLIP [--checkpoint PATH] [--json OUT]

Animates as ``splinecam animate`` does (face crop, relative mode, frame 0 the reference) with the torch
model, and for every frame measures the dense motion's sampling grid (driving → source, at the motion's
size): the share of its cells whose Jacobian determinant is ≤ 0 — where neighbouring output pixels sample
the source in the reverse order, seen as a lock of hair or a patch of background folding over itself — for
the mixed grid the generator uses and for each TPS alone. A single TPS hardly ever folds; where the softmax
mix switches between two warps whose displacements differ, the mix does. training/BUNDLED.md quotes it;
``train_params.loss_weights.fold`` (training/losses.py) is the loss that penalises it; the measure is engines/tpsmm/geometry.py fold_fraction_and_depth.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
from dataclasses import asdict, dataclass, field

import numpy as np


@dataclass
class FoldReport:
    """One animation: per frame the folded share of the mixed grid, and per warp (identity first, then
    each TPS) the share of frames where it folds anywhere."""

    source: str
    driving: str
    checkpoint: str
    mixed: list[float] = field(default_factory=list)
    single_folds: list[float] = field(default_factory=list)

    @property
    def mean(self) -> float:
        return float(np.mean(self.mixed)) if self.mixed else 0.0

    def summary(self) -> str:
        m = np.asarray(self.mixed)
        worst = int(m.argmax()) if len(m) else -1
        singles = ", ".join(f"{100 * s:.1f}" for s in self.single_folds)
        return (f"{self.source} × {self.driving}: mixed grid folded over {100 * self.mean:.2f} % of its cells on "
                f"average ({100 * (m > 0).mean():.0f} % of {len(m)} frames fold somewhere; worst frame {worst}: "
                f"{100 * m.max():.2f} %); frames where each warp alone folds (identity, TPS 1…): {singles} %")


def measure(source_path: str, driving_path: str, checkpoint: str | None = None,
            max_frames: int | None = None) -> FoldReport:
    """The fold report of one animation (the torch model's motion, the keypoints animate feeds it)."""
    from splinecam.benchmarks.animated_motion import AnimatedMotion
    from splinecam.engines.tpsmm.geometry import fold_fraction_and_depth

    anim = AnimatedMotion.open(source_path, driving_path, checkpoint, max_frames, "torch", "cpu", "fp32",
                               tool="motion_folds")
    report = FoldReport(str(source_path), str(driving_path), checkpoint or "bundled")
    singles = []
    for _, motion in anim:
        report.mixed.append(round(float(fold_fraction_and_depth(motion.deformation)[0][0]), 6))
        if motion.transformations is not None:
            singles.append((fold_fraction_and_depth(motion.transformations[0])[0] > 0).numpy())
    report.single_folds = [round(float(s), 4) for s in np.mean(singles, axis=0)] if singles else []
    return report


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(prog="python -m splinecam.benchmarks.motion_folds", description=__doc__.split("\n")[0])
    ap.add_argument("--source", required=True, nargs="+", help="portrait(s) to animate")
    ap.add_argument("--driving", required=True, nargs="+", help="driving clip(s)")
    ap.add_argument("--checkpoint", help="weights (default: the bundled cpu-256)")
    ap.add_argument("--max-frames", type=int)
    ap.add_argument("--json", help="write the reports here")
    args = ap.parse_args(argv)
    from splinecam.engines.errors import SplinecamError

    for p in (*args.source, *args.driving):
        if not os.path.isfile(p):
            print(f"motion_folds: error: {p} is not a file", file=sys.stderr)
            return 2
    reports = []
    try:
        for src in args.source:
            for drv in args.driving:
                reports.append(measure(src, drv, args.checkpoint, args.max_frames))
                print(reports[-1].summary(), flush=True)
    except SplinecamError as exc:  # no face in a source, an unreadable clip or checkpoint: one line
        print(f"motion_folds: error: {exc}", file=sys.stderr)
        return 2
    if args.json:
        with open(args.json, "w") as f:
            json.dump([{**asdict(r), "mean": r.mean} for r in reports], f, indent=1)
    return 0


if __name__ == "__main__":
    sys.exit(main())
