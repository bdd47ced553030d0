"""The files of a run directory besides the checkpoint: ``log.txt`` (:class:`RunLog`), the CSVs
(``losses.csv`` per step, ``epochs.csv`` per epoch, ``warmstart.csv`` per logged warm-start step;
:class:`RunFiles`), the ETA of the progress lines (:class:`Eta`), ``learning_curve.png`` and the
``vis/step-NNNNNN.png`` grids. Rank 0 writes them; every write of a whole file is tmp + rename."""

from __future__ import annotations

import csv
import os
import time
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F

from splinecam.training.options import LOSS_KEYS

STEP_HEADER = ["step", "epoch", "lr", "total", *LOSS_KEYS, "seconds"]
EPOCH_HEADER = ["epoch", "steps", "lr", "total", *LOSS_KEYS]
WARMSTART_HEADER = ["step", "landmark_l1", "wall_s"]


class RunLog:
    """log.txt + stdout (rank 0 only)."""

    def __init__(self, run_dir: Path, enabled: bool):
        self.enabled = enabled
        self.path = run_dir / "log.txt"

    def __call__(self, msg: str) -> None:
        if not self.enabled:
            return
        line = f"[{time.strftime('%Y-%m-%d %H:%M:%S')}] {msg}"
        print(line, flush=True)
        with self.path.open("a") as f:
            f.write(line + "\n")


def truncate_csv(path: Path, max_step: int, header: list[str] | None = None) -> None:
    """Drop rows logged after the checkpoint we resume from (their steps are redone).

    With ``header`` (the columns this version writes), a file written under another header — a run
    started before a loss was added, say — is rewritten under ``header``, each old value kept in its
    column by name and a new column left empty, so the rows appended next line up with it."""
    if not path.is_file():
        return
    with path.open(newline="") as f:
        rows = list(csv.reader(f))
    if not rows:
        return
    old_header, body = rows[0], [r for r in rows[1:] if r and int(float(r[0])) <= max_step]
    if header is not None and old_header != header:
        index = {name: i for i, name in enumerate(old_header)}
        body = [[r[index[name]] if name in index and index[name] < len(r) else "" for name in header] for r in body]
        old_header = header
    tmp = path.with_name(path.name + ".tmp")
    with tmp.open("w", newline="") as f:
        csv.writer(f).writerows([old_header, *body])
    tmp.replace(path)


def append_csv(path: Path, header: list[str], row: list) -> None:
    """One row, with the header first when the file is new."""
    new = not path.is_file()
    with path.open("a", newline="") as f:
        w = csv.writer(f)
        if new:
            w.writerow(header)
        w.writerow(row)


def _losses(vals: dict[str, float]) -> list[str]:
    return [f"{vals[k]:.5f}" if k in vals else "" for k in LOSS_KEYS]


@dataclass
class RunFiles:
    """The CSVs of a main run (``train``)."""

    run_dir: Path

    def truncate_after(self, step: int, epoch: int, warm_step: int) -> None:
        """On resume: forget rows written after the checkpoint (their steps are redone)."""
        truncate_csv(self.run_dir / "losses.csv", step, STEP_HEADER)
        truncate_csv(self.run_dir / "warmstart.csv", warm_step, WARMSTART_HEADER)
        truncate_csv(self.run_dir / "epochs.csv", epoch - 1, EPOCH_HEADER)

    def step_row(self, step: int, epoch: int, lr: float, total: float, vals: dict[str, float], seconds: float) -> None:
        append_csv(self.run_dir / "losses.csv", STEP_HEADER,
                   [step, epoch, f"{lr:.3g}", f"{total:.5f}", *_losses(vals), f"{seconds:.3f}"])

    def epoch_row(self, epoch: int, step: int, lr: float, means: dict[str, float]) -> None:
        append_csv(self.run_dir / "epochs.csv", EPOCH_HEADER,
                   [epoch, step, f"{lr:.3g}", f"{means['total']:.5f}", *_losses(means)])

    def warmstart_row(self, warm_step: int, landmark_l1: float, wall: float) -> None:
        append_csv(self.run_dir / "warmstart.csv", WARMSTART_HEADER, [warm_step, f"{landmark_l1:.6f}", f"{wall:.1f}"])


@dataclass
class Eta:
    """Remaining time of the main loop, from its own steps (the warm start's time left out)."""

    start_step: int
    warm_wall: float

    def minutes(self, step: int, total_steps: int, wall: float) -> float:
        done_here = max(1, step - self.start_step)
        return (total_steps - step) * ((wall - self.warm_wall) / done_here) / 60


def plot_learning_curve(run_dir: Path) -> Path | None:
    """learning_curve.png from losses.csv (total and each loss, running mean)."""
    path = run_dir / "losses.csv"
    if not path.is_file():
        return None
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    with path.open() as f:
        rows = list(csv.DictReader(f))
    if len(rows) < 2:
        return None
    steps = np.array([float(r["step"]) for r in rows])
    fig, ax = plt.subplots(figsize=(8, 4.5))
    for key in ("total",) + LOSS_KEYS:
        vals = np.array([float(r[key]) if r.get(key) not in (None, "") else np.nan for r in rows])
        if np.all(np.isnan(vals)) or np.nanmax(np.abs(vals)) == 0:
            continue
        k = max(1, len(vals) // 50)
        smooth = np.convolve(np.nan_to_num(vals), np.ones(k) / k, mode="valid")
        ax.plot(steps[k - 1:], smooth, label=key, lw=1.2 if key == "total" else 0.8)
    ax.set_xlabel("step")
    ax.set_ylabel("loss (weighted)")
    ax.set_yscale("log")
    ax.grid(alpha=0.3)
    ax.legend(fontsize=8)
    ax.set_title(f"{run_dir.name}: training losses (running mean)")
    fig.tight_layout()
    out = run_dir / "learning_curve.png"
    tmp = out.with_name(f"learning_curve.tmp{os.getpid()}.png")
    fig.savefig(tmp, dpi=90)
    plt.close(fig)
    tmp.replace(out)
    return out


@dataclass
class StepImages:
    """What one step's visualisation shows: the batch, its prediction, keypoints and last occlusion map."""

    source: torch.Tensor
    driving: torch.Tensor
    prediction: torch.Tensor
    kp_source: torch.Tensor
    kp_driving: torch.Tensor
    occlusion: torch.Tensor


def draw_keypoints(img: np.ndarray, kp: np.ndarray, num_tps: int) -> np.ndarray:
    """Keypoints (K,2) in [-1,1] drawn on an H×W×3 uint8 image, one colour per TPS."""
    import cv2
    import matplotlib

    cmap = matplotlib.colormaps["gist_rainbow"]
    img = img.copy()
    s = img.shape[0]
    r = max(1, s // 64)
    for i, (x, y) in enumerate(kp):
        c = cmap((i // 5) / max(1, num_tps - 1))
        cv2.circle(img, (int((x + 1) / 2 * (s - 1)), int((y + 1) / 2 * (s - 1))), r,
                   tuple(int(255 * v) for v in c[:3]), -1, lineType=cv2.LINE_AA)
    return img


def save_visualisation(path: Path, res: StepImages, num_tps: int, rows: int = 4) -> None:
    """PNG grid: per sample source+kp | driving+kp | prediction | occlusion."""
    import cv2

    def to_img(t):
        return (t.clamp(0, 1).permute(1, 2, 0).numpy() * 255).astype(np.uint8)

    lines = []
    for i in range(min(rows, res.source.shape[0])):
        src = draw_keypoints(to_img(res.source[i]), res.kp_source[i].numpy(), num_tps)
        drv = draw_keypoints(to_img(res.driving[i]), res.kp_driving[i].numpy(), num_tps)
        pred = to_img(res.prediction[i])
        occ = res.occlusion[i]
        occ = F.interpolate(occ[None], size=pred.shape[:2], mode="bilinear", align_corners=False)[0]
        occ = to_img(occ.repeat(3, 1, 1))
        lines.append(np.concatenate([src, drv, pred, occ], axis=1))
    grid = np.concatenate(lines, axis=0)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_suffix(".tmp.png")
    cv2.imwrite(str(tmp), cv2.cvtColor(grid, cv2.COLOR_RGB2BGR))
    tmp.replace(path)
