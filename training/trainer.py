"""``train``: the TPSMM training recipe (paper §3.3, official ``train.py``), resumable, DDP-ready.

Per step (``FullModel.forward``): keypoints of source and driving, background affine (from
``bg_start``), dense motion with TPS dropout (p = dropout_startp + 0.1 per dropout_inc_epoch, at most
dropout_maxp, off from dropout_epoch), inpainting; losses: perceptual pyramid (VGG19 relu1_1…relu5_1
at scales 1, ½, ¼, ⅛), equivariance with a random TPS, warp loss, background loss, and our optional
additions (pixel pyramid L1, landmark regression of the keypoints). Adam(lr, betas 0.5/0.999,
weight decay 1e-4) over keypoint + dense motion + inpainting, a second Adam for the background
predictor, MultiStepLR(epoch_milestones, 0.1) per epoch, gradient clipping (max-norm 10, inf norm)
on the keypoint detector, dense motion and background networks, as the official code does.

Optional warm start (``--warmstart-steps``): before the main loop, the keypoint detector alone is
regressed onto face-mesh landmarks (see :mod:`splinecam.training.landmarks`; with ``--landmark-augment`` on
heavily augmented frames, :mod:`splinecam.training.keypoints`). ``--freeze-keypoints`` then keeps it fixed in
the main loop, which trains dense motion and inpainting on landmark-tied keypoints.

Run directory: ``checkpoint.pth`` (latest, written atomically: tmp + os.replace; models, optimizers,
scheduler, step, epoch, RNG states, options), ``log.txt``, ``losses.csv`` (per step),
``epochs.csv`` (per epoch means), ``learning_curve.png``, ``vis/step-NNNNNN.png``, ``config.yaml``.
``--resume`` continues from ``checkpoint.pth`` exactly (data order and augmentation are a function
of seed/epoch/index, so the remaining batches are the ones the killed run would have seen).
Under ``torchrun`` (or with WORLD_SIZE/RANK set) the run is data-parallel (gloo on CPU, nccl on
CUDA); the batch size is global; rank 0 writes everything.
"""

from __future__ import annotations

import contextlib
import csv
import math
import os
import random
import signal
import time
import warnings
from dataclasses import asdict, dataclass
from pathlib import Path

import numpy as np
import torch
import torch.distributed as dist
import torch.nn.functional as F
import yaml
from torch import nn
from torch.utils.data import DataLoader, DistributedSampler

from splinecam.engines.errors import CheckpointError, SplinecamError
from splinecam.engines.interrupts import SIGNALS, Interrupted
from splinecam.engines.validate import Range, ValidationError, check_finite_tensors
from splinecam.engines.tpsmm.config import ModelConfig, check_image_size, config_from_dict, load_config
from splinecam.engines.tpsmm.geometry import RandomTPS, kp2gaussian, solve_tps
from splinecam.engines.tpsmm.networks import TPSMM
from splinecam.training import losses as L
from splinecam.training.data import Augmentation, PairDataset, load_clips
from splinecam.training.keypoints import augment, landmark_batch, landmark_l1, mirror_permutation
from splinecam.training.landmarks import choose_landmarks, mean_face
from splinecam.training.vgg import build_perceptual_net

CHECKPOINT = "checkpoint.pth"
# what the config's train_params may hold (engines/validate.py); a bad value is one line, never a traceback
TRAIN_PARAMS = {
    "num_epochs": Range(int, 1, 10**6), "num_repeats": Range(int, 1, 10**6), "epoch_milestones": Range(int, 0, 10**6),
    "lr_generator": Range(float, 0, 1, low_open=True), "batch_size": Range(int, 1, 4096),
    "scales": Range(float, 0, 1, low_open=True), "dropout_epoch": Range(int, 0, 10**6),
    "dropout_maxp": Range(float, 0, 1), "dropout_startp": Range(float, 0, 1), "dropout_inc_epoch": Range(int, 1, 10**6),
    "bg_start": Range(int, 0, 10**6),
}
LOSS_WEIGHT = Range(float, 0, 1e6)
LOSS_KEYS = ("perceptual", "pixel", "equivariance_value", "warp_loss", "bg", "landmark")


@dataclass
class TrainOptions:
    """Everything a run depends on besides the model config (stored in the checkpoint)."""

    data: str
    out: str
    resume: bool = False
    init: str | None = None
    max_steps: int | None = None
    epochs: int | None = None
    batch_size: int | None = None
    device: str = "cpu"
    threads: int | None = None
    image_size: int | None = None
    bf16: bool = False
    vgg_weights: str | None = None
    perceptual_width: float = 0.25
    lr: float | None = None
    epoch_milestones: list[int] | None = None
    train_param: list[str] | None = None
    num_repeats: int | None = None
    checkpoint_minutes: float = 5.0
    checkpoint_steps: int | None = None
    log_every: int = 10
    vis_every: int = 200
    warmstart_steps: int = 0
    warmstart_lr: float = 1e-3
    warmstart_batch: int = 16
    landmark_augment: bool = False
    landmark_weight: float | None = None
    freeze_keypoints: bool = False
    pixel_weight: float | None = None
    seed: int = 0


@dataclass
class TrainSchedule:
    """The training section of the config, resolved (official ``train_params`` names)."""

    num_epochs: int
    num_repeats: int
    epoch_milestones: list[int]
    lr: float
    batch_size: int
    scales: list[float]
    dropout_epoch: int
    dropout_maxp: float
    dropout_startp: float
    dropout_inc_epoch: int
    bg_start: int
    transform_params: dict
    loss_weights: dict

    @classmethod
    def from_config(cls, cfg: ModelConfig, opts: TrainOptions) -> "TrainSchedule":
        tp = cfg.train_params or {}

        def param(key, default):  # the config's (or --train-param's) value, checked (engines/validate.py)
            value = tp.get(key, default)
            rng = TRAIN_PARAMS[key]
            try:
                if isinstance(default, list):
                    if not isinstance(value, (list, tuple)):
                        raise ValidationError(f"train_params.{key} must be a list, got {value!r:.40}")
                    return [rng.check(v, f"train_params.{key}[{i}]") for i, v in enumerate(value)]
                return rng.check(value, f"train_params.{key}")
            except ValidationError as err:
                raise SplinecamError(f"config {cfg.name!r}: {err}") from None

        lw = tp.get("loss_weights") or {}
        if not isinstance(lw, dict):
            raise SplinecamError(f"config {cfg.name!r}: train_params.loss_weights must be a mapping")
        lw = dict(lw)
        lw.setdefault("perceptual", [10, 10, 10, 10, 10])
        lw.setdefault("equivariance_value", 10)
        lw.setdefault("warp_loss", 10)
        lw.setdefault("bg", 10)
        lw.setdefault("pixel", 0)
        lw.setdefault("landmark", 0)
        if opts.landmark_weight is not None:
            lw["landmark"] = opts.landmark_weight
        if opts.pixel_weight is not None:
            lw["pixel"] = opts.pixel_weight
        for k, v in lw.items():
            try:
                for i, w in enumerate(v if isinstance(v, (list, tuple)) else [v]):
                    LOSS_WEIGHT.check(w, f"train_params.loss_weights.{k}" + (f"[{i}]" if isinstance(v, list) else ""))
            except ValidationError as err:
                raise SplinecamError(f"config {cfg.name!r}: {err}") from None
        transform = tp.get("transform_params") or {"sigma_affine": 0.05, "sigma_tps": 0.005, "points_tps": 5}
        if not isinstance(transform, dict):
            raise SplinecamError(f"config {cfg.name!r}: train_params.transform_params must be a mapping")
        return cls(
            num_epochs=opts.epochs or param("num_epochs", 100),
            num_repeats=opts.num_repeats or param("num_repeats", 1),
            epoch_milestones=(list(opts.epoch_milestones) if opts.epoch_milestones is not None
                              else param("epoch_milestones", [])),
            lr=float(opts.lr or param("lr_generator", 2e-4)),
            batch_size=opts.batch_size or param("batch_size", 8),
            scales=[float(x) for x in param("scales", [1, 0.5, 0.25, 0.125])],
            dropout_epoch=param("dropout_epoch", 0),
            dropout_maxp=float(param("dropout_maxp", 0.3)),
            dropout_startp=float(param("dropout_startp", 0.1)),
            dropout_inc_epoch=max(1, param("dropout_inc_epoch", 10)),
            bg_start=param("bg_start", 0),
            transform_params=dict(transform),
            loss_weights=lw,
        )

    def dropout_p(self, epoch: int) -> float | None:
        """TPS dropout probability of an epoch (None = off)."""
        if epoch >= self.dropout_epoch:
            return None
        return min(self.dropout_startp + 0.1 * (epoch // self.dropout_inc_epoch), self.dropout_maxp)


@dataclass
class StepResult:
    """Losses of one step (weighted, as optimised) and the tensors for visualisation."""

    losses: dict[str, float]
    total: float
    source: torch.Tensor | None = None
    driving: torch.Tensor | None = None
    prediction: torch.Tensor | None = None
    kp_source: torch.Tensor | None = None
    kp_driving: torch.Tensor | None = None
    occlusion: torch.Tensor | None = None


class FullModel(nn.Module):
    """The networks + losses of one training step (what DDP wraps). Returns (loss dict, generated)."""

    def __init__(self, model: TPSMM, schedule: TrainSchedule, perceptual: nn.Module, bf16: bool,
                 landmark_indices: torch.Tensor | None, geometric_aug: bool = False,
                 mirror: torch.Tensor | None = None, freeze_keypoints: bool = False):
        super().__init__()
        self.geometric_aug = geometric_aug
        self.freeze_keypoints = freeze_keypoints
        self.kp_detector = model.kp_detector
        self.bg_predictor = model.bg_predictor
        self.dense_motion_network = model.dense_motion_network
        self.inpainting_network = model.inpainting_network
        self.schedule = schedule
        self.pyramid = ImagePyramidFrozen(schedule.scales)
        self.perceptual = perceptual
        self.bf16 = bf16
        self.num_tps = model.config.num_tps
        self.register_buffer("landmark_indices", landmark_indices if landmark_indices is not None
                             else torch.zeros(0, dtype=torch.long), persistent=False)
        self.register_buffer("mirror", mirror if mirror is not None else torch.arange(468), persistent=False)
        # landmark configs: the keypoints are these face-mesh landmarks of each frame (no keypoint network)
        self.landmark_keypoints = model.config.landmark_keypoints
        self.register_buffer("keypoint_landmarks", torch.as_tensor(model.config.keypoint.landmarks, dtype=torch.long),
                             persistent=False)

    def amp(self):
        return torch.autocast("cpu", dtype=torch.bfloat16) if self.bf16 else contextlib.nullcontext()

    def forward(self, batch: dict[str, torch.Tensor], epoch: int, transform: RandomTPS | None,
                aug_rng: np.random.Generator | None = None, warmstart: bool = False):
        """One step's weighted losses. ``aug_rng`` draws the landmark augmentation (``--landmark-augment``);
        with ``warmstart`` the batch is ``images`` (N,3,S,S) + ``landmarks`` (N,468,2) from
        :func:`splinecam.training.keypoints.landmark_batch` and only the keypoint detector is trained."""
        lw = self.schedule.loss_weights
        out: dict[str, torch.Tensor] = {}
        if warmstart:
            images, lms = batch["images"], batch["landmarks"]
            if self.geometric_aug and aug_rng is not None:
                images, lms = augment(images.cpu(), lms.cpu(), self.mirror.cpu(), aug_rng)
                images, lms = images.to(self.mirror.device), lms.to(self.mirror.device)
            with self.amp():
                kp = self.kp_detector(images).float()
            out["landmark"] = landmark_l1(kp, lms, self.landmark_indices)
            return out, {}
        source, driving = batch["source"], batch["driving"]
        if self.landmark_keypoints:
            kp_source = batch["source_landmarks"][:, self.keypoint_landmarks].float()
            kp_driving = batch["driving_landmarks"][:, self.keypoint_landmarks].float()
        else:
            with self.amp(), (torch.no_grad() if self.freeze_keypoints else contextlib.nullcontext()):
                kp_source = self.kp_detector(source).float()
                kp_driving = self.kp_detector(driving).float()
        bg_param = None
        use_bg = self.bg_predictor is not None and epoch >= self.schedule.bg_start
        if use_bg:
            with self.amp():
                bg_param = self.bg_predictor(source, driving).float()
        dm = self.dense_motion_network
        small = dm.downsample(source)
        h, w = small.shape[2:]
        heat_source = kp2gaussian(kp_source, h, w, dm.kp_variance)
        tps = solve_tps(kp_driving, kp_source, self.num_tps, getattr(dm, "tps_regularise", "all"))  # float32, outside autocast
        trans = dm.transformations(tps, h, w, bg_param)
        with self.amp():
            motion = dm.motion(small, heat_source, kp_driving, trans, self.schedule.dropout_p(epoch))
            gen = self.inpainting_network(source, motion, keep_warped=True)
        prediction = gen.prediction.float()

        pred_pyr = self.pyramid(prediction)
        real_pyr = self.pyramid(driving)
        if any(lw["perceptual"]):
            with self.amp():
                out["perceptual"] = L.perceptual_pyramid_loss(pred_pyr, real_pyr, self.perceptual, lw["perceptual"])
        if lw["pixel"]:
            out["pixel"] = lw["pixel"] * L.pixel_pyramid_loss(pred_pyr, real_pyr)
        if lw["equivariance_value"] and transform is not None and not self.freeze_keypoints and self.kp_detector:
            grid = transform.transform_frame(driving)
            transformed = F.grid_sample(driving, grid, padding_mode="reflection", align_corners=True)
            with self.amp():
                kp_t = self.kp_detector(transformed).float()
            value = (kp_driving - transform.warp_coordinates(kp_t)).abs().mean()
            out["equivariance_value"] = lw["equivariance_value"] * value
        if lw["warp_loss"]:
            with self.amp():
                enc = self.inpainting_network.encode_driving(driving, motion.occlusion_maps)
            out["warp_loss"] = lw["warp_loss"] * L.warp_loss(enc, gen.warped_encoder_maps)
        if use_bg and lw["bg"]:
            with self.amp():
                reverse = self.bg_predictor(driving, source).float()
            out["bg"] = lw["bg"] * L.background_loss(bg_param, reverse)
        if lw["landmark"] and self.landmark_indices.numel() and not self.freeze_keypoints and self.kp_detector:
            both = torch.cat([kp_source, kp_driving])
            lms = torch.cat([batch["source_landmarks"], batch["driving_landmarks"]])
            value = landmark_l1(both, lms, self.landmark_indices)
            if self.geometric_aug and aug_rng is not None:
                images, moved = augment(driving.cpu(), batch["driving_landmarks"].cpu(), self.mirror.cpu(), aug_rng)
                with self.amp():
                    kp_aug = self.kp_detector(images.to(driving.device)).float()
                value = value + landmark_l1(kp_aug, moved, self.landmark_indices)
            out["landmark"] = lw["landmark"] * value
        generated = {"prediction": prediction.detach(), "kp_source": kp_source.detach(),
                     "kp_driving": kp_driving.detach(),
                     # the occlusion map; the keypoint-mask model occludes nothing: its driving masks
                     "occlusion": (motion.occlusion_maps[-1] if motion.occlusion_maps
                                   else motion.preview).detach().float()}
        return out, generated


class ImagePyramidFrozen(L.ImagePyramid):
    """The loss pyramid with its fixed anti-aliasing kernels excluded from gradients / DDP."""

    def __init__(self, scales):
        super().__init__(scales)
        for p in self.parameters():
            p.requires_grad_(False)


# ----------------------------------------------------------------------------- distributed


@dataclass
class Dist:
    rank: int = 0
    world: int = 1
    local_rank: int = 0

    @property
    def main(self) -> bool:
        return self.rank == 0


def init_distributed(device: str) -> Dist:
    world = int(os.environ.get("WORLD_SIZE", "1"))
    if world <= 1:
        return Dist()
    if not dist.is_initialized():
        dist.init_process_group("nccl" if device.startswith("cuda") else "gloo")
    return Dist(dist.get_rank(), dist.get_world_size(), int(os.environ.get("LOCAL_RANK", "0")))


# ----------------------------------------------------------------------------- run files


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


def _truncate_csv(path: Path, max_step: int) -> None:
    """Drop rows logged after the checkpoint we resume from (their steps are redone)."""
    if not path.is_file():
        return
    rows = path.read_text().splitlines()
    if not rows:
        return
    keep = [rows[0]] + [r for r in rows[1:] if r and int(float(r.split(",")[0])) <= max_step]
    tmp = path.with_name(path.name + ".tmp")
    tmp.write_text("\n".join(keep) + "\n")
    tmp.replace(path)


def _append_csv(path: Path, header: list[str], row: list) -> None:
    new = not path.is_file()
    with path.open("a", newline="") as f:
        w = csv.writer(f)
        if new:
            w.writerow(header)
        w.writerow(row)


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


def save_visualisation(path: Path, res: StepResult, num_tps: int, rows: int = 4) -> None:
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


# ----------------------------------------------------------------------------- checkpoints


def _rng_state() -> dict:
    np_state = np.random.get_state()
    return {"torch": torch.get_rng_state(), "numpy_keys": torch.from_numpy(np_state[1].astype(np.int64)),
            "numpy_pos": int(np_state[2]), "python": repr(random.getstate())}


def _set_rng_state(state: dict) -> None:
    torch.set_rng_state(state["torch"])
    np.random.set_state(("MT19937", state["numpy_keys"].numpy().astype(np.uint32), state["numpy_pos"], 0, 0.0))
    import ast

    random.setstate(ast.literal_eval(state["python"]))


def save_checkpoint(path: Path, payload: dict) -> None:
    """torch.save to a temporary file in the same folder, fsync, then os.replace (atomic)."""
    tmp = path.with_name(path.name + f".tmp{os.getpid()}")
    with tmp.open("wb") as f:
        torch.save(payload, f)
        f.flush()
        os.fsync(f.fileno())
    os.replace(tmp, path)


def read_training_checkpoint(path: str | Path) -> dict:
    """A checkpoint written by ``train`` (weights_only: nothing in it can run code)."""
    path = Path(path)
    if not path.is_file():
        raise CheckpointError(f"no checkpoint at {path}: train first (or drop --resume)")
    try:
        data = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as exc:  # noqa: BLE001
        raise CheckpointError(f"{path} is not a readable training checkpoint ({str(exc).splitlines()[0][:160]})") from None
    if not isinstance(data, dict) or "models" not in data or "config" not in data:
        raise CheckpointError(f"{path} is not a splinecam training checkpoint (no models/config)")
    return data


def model_from_training_checkpoint(data: dict) -> TPSMM:
    """Rebuild the TPSMM of a training checkpoint with its weights."""
    try:
        cfg = config_from_dict(yaml.safe_load(data["config"]), str(data.get("config_name", "run")))
    except (yaml.YAMLError, TypeError) as exc:
        raise CheckpointError(f"the training checkpoint's stored config is unreadable ({exc})") from None
    model = TPSMM(cfg)
    for name, module in model.submodules().items():
        if name in data["models"]:
            try:
                check_finite_tensors(data["models"][name], f"training checkpoint: {name}")
                module.load_state_dict(data["models"][name])
            except ValidationError as err:
                raise CheckpointError(str(err)) from None
            except RuntimeError as exc:
                raise CheckpointError(f"training checkpoint: {name} does not match its config "
                                      f"({str(exc).splitlines()[0][:160]})") from None
    return model


@dataclass
class InitResult:
    """What ``--init`` loaded: the path, the landmark indices its run tied the keypoints to (or None),
    and per module the parameter groups it did not have (trained from scratch, e.g. a new head)."""

    path: str
    landmark_indices: list[int] | None
    fresh: dict[str, list[str]]


def init_weights_from(model: TPSMM, path: str) -> InitResult:
    """``--init``: weights from a training checkpoint, a splinecam safetensors or an official .pth.tar.
    Tensors present in both must have equal shapes; tensors only in ``model`` stay fresh."""
    p = Path(path)
    indices = None
    if p.suffix == ".safetensors" or p.name.endswith(".pth.tar"):
        from splinecam.engines.tpsmm.checkpoint import load_checkpoint

        # our safetensors carry their own config (which may differ, e.g. in the keypoint head);
        # an official .pth.tar is read with this run's
        loaded = load_checkpoint(p, None if p.suffix == ".safetensors" else model.config)
        src = loaded.model
        indices = (loaded.metadata.get("training") or {}).get("landmark_indices")
    else:
        data = read_training_checkpoint(p)
        src = model_from_training_checkpoint(data)
        indices = data.get("landmark_indices")
    fresh_groups: dict[str, list[str]] = {}
    for name, module in model.submodules().items():
        other = getattr(src, name, None)
        if other is None:
            continue
        ours, theirs = module.state_dict(), other.state_dict()
        for key in ours.keys() & theirs.keys():
            if ours[key].shape != theirs[key].shape:
                raise CheckpointError(f"--init {p}: {name}.{key} is {tuple(theirs[key].shape)} there, "
                                      f"{tuple(ours[key].shape)} in this config: pass the --config it was "
                                      f"trained with, or --init a checkpoint of this config")
        fresh = sorted(ours.keys() - theirs.keys())
        if fresh and len(fresh) == len(ours):
            raise CheckpointError(f"--init {p}: its {name} shares no weights with this config: pass the "
                                  f"--config it was trained with, or --init a checkpoint of this config")
        module.load_state_dict({k: v for k, v in theirs.items() if k in ours}, strict=False)
        if fresh:  # e.g. a new keypoint head on an initialised backbone
            fresh_groups[name] = sorted({k.split(".")[0] for k in fresh})
    return InitResult(str(p), indices, fresh_groups)


# ----------------------------------------------------------------------------- the run


def _batches(loader, skip: int):
    it = iter(loader)
    for _ in range(skip):
        next(it)
    return it


def train(cfg: ModelConfig, opts: TrainOptions) -> Path:
    """Run (or resume) a training run; returns the path of the last checkpoint."""
    d = init_distributed(opts.device)
    if opts.threads:
        torch.set_num_threads(opts.threads)
    run_dir = Path(opts.out)
    ckpt_path = run_dir / CHECKPOINT
    if d.main:
        run_dir.mkdir(parents=True, exist_ok=True)
    if d.world > 1:
        dist.barrier()
    log = RunLog(run_dir, d.main)

    resume_data = None
    if opts.resume:
        resume_data = read_training_checkpoint(ckpt_path)
        cfg = config_from_dict(yaml.safe_load(resume_data["config"]), resume_data.get("config_name", cfg.name))
    elif d.main and ckpt_path.exists():
        raise SplinecamError(f"{run_dir} already holds a run: pass --resume to continue it, or another --out")

    if opts.train_param:
        cfg = with_train_params(cfg, opts.train_param)
    schedule = TrainSchedule.from_config(cfg, opts)
    image_size = check_image_size(cfg, opts.image_size or cfg.image_size, "--image-size")
    seed = opts.seed
    torch.manual_seed(seed)
    np.random.seed(seed)
    random.seed(seed)

    clips = load_clips(opts.data)
    if cfg.landmark_keypoints and (opts.warmstart_steps or opts.freeze_keypoints or opts.landmark_augment):
        raise SplinecamError(f"{cfg.name} takes face-mesh landmarks as keypoints (no keypoint network): "
                             f"--warmstart-steps, --freeze-keypoints and --landmark-augment do not apply")
    if cfg.generator.kind == "keypoint-mask" and schedule.loss_weights.get("warp_loss"):
        raise SplinecamError(f"{cfg.name} warps nothing (keypoint masks, no motion field): the warp loss does not "
                             f"apply; set loss_weights.warp_loss: 0")
    model = TPSMM(cfg)
    model.avd_network = None  # trained by train-avd
    init_from, init_indices = None, None
    if opts.init and not resume_data:
        loaded_init = init_weights_from(model, opts.init)
        init_from, init_indices = loaded_init.path, loaded_init.landmark_indices
        for name, groups in loaded_init.fresh.items():
            log(f"--init {init_from}: {name} initialised except {', '.join(groups)} (not in it: trained from scratch)")

    perceptual = build_perceptual_net(opts.vgg_weights, opts.perceptual_width)
    landmark_indices, mirror = None, None
    if resume_data is not None and resume_data.get("landmark_indices") is not None:
        landmark_indices = torch.as_tensor(resume_data["landmark_indices"], dtype=torch.long)
    elif init_indices is not None:  # keep the keypoint ↔ landmark assignment of the initialising run
        landmark_indices = torch.as_tensor(init_indices, dtype=torch.long)
    elif opts.warmstart_steps or schedule.loss_weights.get("landmark"):
        landmark_indices = torch.empty(0, dtype=torch.long)  # chosen below, on the data's mean face
    if landmark_indices is not None:
        face = mean_face([c.landmarks for c in clips])
        if not landmark_indices.numel():
            landmark_indices = torch.from_numpy(choose_landmarks(face, cfg.num_tps))
        mirror = torch.from_numpy(mirror_permutation(face))
    full = FullModel(model, schedule, perceptual, opts.bf16, landmark_indices, opts.landmark_augment,
                     mirror, opts.freeze_keypoints).to(opts.device)
    for m in model.submodules().values():
        m.train()

    keypoint_params = list(model.kp_detector.parameters()) if model.kp_detector is not None else []
    dense_params = list(model.dense_motion_network.parameters())
    params = [*keypoint_params, *dense_params, *model.inpainting_network.parameters()]
    optimizer = torch.optim.Adam(params, lr=schedule.lr, betas=(0.5, 0.999), weight_decay=1e-4)
    opt_bg = (torch.optim.Adam(model.bg_predictor.parameters(), lr=schedule.lr, betas=(0.5, 0.999), weight_decay=1e-4)
              if model.bg_predictor is not None else None)
    opt_warm = torch.optim.Adam(keypoint_params or [torch.zeros(1, requires_grad=True)], lr=opts.warmstart_lr)
    scheduler = torch.optim.lr_scheduler.MultiStepLR(optimizer, schedule.epoch_milestones, gamma=0.1)
    sched_bg = torch.optim.lr_scheduler.MultiStepLR(opt_bg, schedule.epoch_milestones, gamma=0.1) if opt_bg else None

    step, epoch, step_in_epoch, warm_step, wall = 0, 0, 0, 0, 0.0
    if resume_data is not None:
        for name, module in model.submodules().items():
            module.load_state_dict(resume_data["models"][name])
        optimizer.load_state_dict(resume_data["optimizer"])
        scheduler.load_state_dict(resume_data["scheduler"])
        if opt_bg and resume_data.get("optimizer_bg"):
            opt_bg.load_state_dict(resume_data["optimizer_bg"])
            sched_bg.load_state_dict(resume_data["scheduler_bg"])
        if opts.epoch_milestones is not None:  # a resumed run may be given a new (e.g. shorter) schedule
            _reschedule([scheduler, sched_bg], schedule.epoch_milestones, resume_data["epoch"], schedule.lr)
        if resume_data.get("optimizer_warmstart"):
            opt_warm.load_state_dict(resume_data["optimizer_warmstart"])
        step, epoch, step_in_epoch = resume_data["step"], resume_data["epoch"], resume_data["step_in_epoch"]
        warm_step, wall = resume_data.get("warmstart_step", 0), resume_data.get("wall_time", 0.0)
        _set_rng_state(resume_data["rng"])
        if d.main:
            _truncate_csv(run_dir / "losses.csv", step)
            _truncate_csv(run_dir / "warmstart.csv", warm_step)
            _truncate_csv(run_dir / "epochs.csv", epoch - 1)
        log(f"resumed from {ckpt_path}: step {step}, epoch {epoch} (+{step_in_epoch} steps), warm-start step {warm_step}")

    ddp = full
    if d.world > 1:
        ddp = nn.parallel.DistributedDataParallel(full, find_unused_parameters=True)

    if cfg.landmark_keypoints and mirror is None:
        mirror = torch.from_numpy(mirror_permutation(mean_face([c.landmarks for c in clips])))
    dataset = PairDataset(clips, image_size, schedule.num_repeats,
                          Augmentation.from_dataset_params(cfg.dataset_params), seed,
                          mirror=mirror.numpy() if cfg.landmark_keypoints else None,
                          require_landmarks=cfg.landmark_keypoints,
                          still_p=float(cfg.dataset_params.get("still_pairs", 0.0)))
    per_rank = max(1, schedule.batch_size // d.world)
    if d.world > 1:
        sampler = DistributedSampler(dataset, d.world, d.rank, shuffle=True, seed=seed, drop_last=True)
    else:
        sampler = _EpochSampler(dataset, seed)
    loader = DataLoader(dataset, batch_size=per_rank, sampler=sampler, drop_last=True, num_workers=0,
                        generator=torch.Generator().manual_seed(seed))  # keeps the global RNG untouched
    steps_per_epoch = len(loader)
    if steps_per_epoch == 0:
        raise SplinecamError(f"batch size {schedule.batch_size} is larger than an epoch ({len(dataset)} pairs): "
                             f"lower --batch-size or raise num_repeats")
    total_steps = schedule.num_epochs * steps_per_epoch
    if opts.max_steps is not None:
        total_steps = min(total_steps, opts.max_steps)

    if resume_data is not None:
        init_from = (resume_data.get("meta") or {}).get("init")
    meta = {"config_name": cfg.name, "perceptual": perceptual.kind, "image_size": image_size,
            "world_size": d.world, "bf16": opts.bf16, "init": init_from}
    if d.main:
        (run_dir / "config.yaml").write_text(yaml.safe_dump(cfg.to_yaml_dict(), sort_keys=False))
        log(f"run {run_dir}: config {cfg.name}, {len(clips)} clips, {len(dataset)} pairs/epoch, "
            f"{steps_per_epoch} steps/epoch, batch {schedule.batch_size} ({d.world} process(es)), "
            f"image size {image_size}, device {opts.device}, threads {torch.get_num_threads()}, bf16 {opts.bf16}")
        log(f"perceptual loss network: {perceptual.kind}")
        log(f"loss weights: {schedule.loss_weights}")

    def payload() -> dict:
        return {
            "format": "splinecam-training", "config": yaml.safe_dump(cfg.to_yaml_dict(), sort_keys=False),
            "config_name": cfg.name, "models": {n: m.state_dict() for n, m in model.submodules().items()},
            "optimizer": optimizer.state_dict(), "scheduler": scheduler.state_dict(),
            "optimizer_bg": opt_bg.state_dict() if opt_bg else None,
            "scheduler_bg": sched_bg.state_dict() if sched_bg else None,
            "optimizer_warmstart": opt_warm.state_dict(),
            "step": step, "epoch": epoch, "step_in_epoch": step_in_epoch, "warmstart_step": warm_step,
            "wall_time": wall, "rng": _rng_state(), "options": asdict(opts),
            "landmark_indices": landmark_indices.tolist() if landmark_indices is not None else None,
            "meta": meta,
        }

    last_save = time.time()

    def checkpoint(reason: str) -> None:
        nonlocal last_save
        if d.main:
            save_checkpoint(ckpt_path, payload())
            plot_learning_curve(run_dir)
            log(f"checkpoint ({reason}): step {step}, epoch {epoch}, wall {wall / 60:.1f} min → {ckpt_path}")
        last_save = time.time()

    def due() -> bool:
        if opts.checkpoint_steps and step % opts.checkpoint_steps == 0:
            return True
        return (time.time() - last_save) >= opts.checkpoint_minutes * 60

    stop = {"flag": False, "signum": None}

    def _on_signal(signum, frame):  # SIGTERM/SIGINT/SIGHUP: finish the step, checkpoint, exit 128 + signum
        stop["flag"] = True
        stop["signum"] = stop["signum"] or signum

    old_handlers = {s: signal.signal(s, _on_signal) for s in SIGNALS}

    try:
        # ---- warm start of the keypoint detector on face-mesh landmarks (cosine-decayed lr; every draw
        #      is a function of (seed, warm step, rank), so a resumed warm start repeats the killed one)
        while warm_step < opts.warmstart_steps and not stop["flag"]:
            t0 = time.time()
            rng = np.random.default_rng([seed, warm_step, d.rank])
            images, lms = landmark_batch(clips, opts.warmstart_batch, image_size, rng)
            for group in opt_warm.param_groups:
                group["lr"] = opts.warmstart_lr * 0.5 * (1 + math.cos(math.pi * warm_step / opts.warmstart_steps))
            batch = {"images": images.to(opts.device), "landmarks": lms.to(opts.device)}
            losses, _ = ddp(batch, 0, None, aug_rng=rng, warmstart=True)
            opt_warm.zero_grad(set_to_none=True)
            losses["landmark"].backward()
            opt_warm.step()
            warm_step += 1
            wall += time.time() - t0
            if d.main and (warm_step % opts.log_every == 0 or warm_step == opts.warmstart_steps):
                v = float(losses["landmark"].detach())
                _append_csv(run_dir / "warmstart.csv", ["step", "landmark_l1", "wall_s"], [warm_step, f"{v:.6f}", f"{wall:.1f}"])
                log(f"warm-start {warm_step}/{opts.warmstart_steps}: landmark L1 {v:.4f} (grid units)")
            if due():
                checkpoint("time")

        # ---- main loop
        if opts.freeze_keypoints and model.kp_detector is not None:  # trained by the warm start; fixed from here
            model.kp_detector.eval().requires_grad_(False)
        warm_wall, start_step = wall, step
        epoch_sums: dict[str, float] = {}
        epoch_count = 0
        rt_tps = torch.Generator()
        while step < total_steps and not stop["flag"]:
            dataset.set_epoch(epoch)
            sampler.set_epoch(epoch)
            it = _batches(loader, step_in_epoch)
            for batch in it:
                t0 = time.time()
                batch = {k: v.to(opts.device) for k, v in batch.items()}
                # every random draw of a step (TPS dropout, random TPS) depends only on (seed, step, rank):
                # a resumed run repeats the killed run's steps exactly
                torch.manual_seed(seed * 1_000_003 + step * 97 + d.rank)
                rt_tps.manual_seed(seed * 1_000_033 + step * 89 + d.rank)
                tp = schedule.transform_params
                transform = RandomTPS.sample(batch["driving"].shape[0], tp["sigma_affine"], tp["sigma_tps"],
                                             tp["points_tps"], generator=rt_tps, device=opts.device)
                losses, gen = ddp(batch, epoch, transform, aug_rng=np.random.default_rng([seed, step, d.rank]))
                loss = sum(losses.values())
                optimizer.zero_grad(set_to_none=True)
                if opt_bg:
                    opt_bg.zero_grad(set_to_none=True)
                loss.backward()
                if opts.freeze_keypoints:  # no update, no weight decay (DDP may hand back zero gradients)
                    for param in keypoint_params:
                        param.grad = None
                if keypoint_params:
                    torch.nn.utils.clip_grad_norm_(keypoint_params, max_norm=10, norm_type=math.inf)
                if dense_params:  # the keypoint-mask model's KeypointMasks has none
                    torch.nn.utils.clip_grad_norm_(dense_params, max_norm=10, norm_type=math.inf)
                optimizer.step()
                if opt_bg and epoch >= schedule.bg_start:
                    torch.nn.utils.clip_grad_norm_(model.bg_predictor.parameters(), max_norm=10, norm_type=math.inf)
                    opt_bg.step()
                step += 1
                step_in_epoch += 1
                dt = time.time() - t0
                wall += dt
                vals = {k: float(v.detach()) for k, v in losses.items()}
                total = float(loss.detach())
                if not math.isfinite(total):
                    raise SplinecamError(f"loss became {total} at step {step}: lower --lr or use fp32 (no --bf16)")
                for k, v in vals.items():
                    epoch_sums[k] = epoch_sums.get(k, 0.0) + v
                epoch_sums["total"] = epoch_sums.get("total", 0.0) + total
                epoch_count += 1
                if d.main:
                    _append_csv(run_dir / "losses.csv", ["step", "epoch", "lr", "total", *LOSS_KEYS, "seconds"],
                                [step, epoch, f"{optimizer.param_groups[0]['lr']:.3g}", f"{total:.5f}",
                                 *[f"{vals[k]:.5f}" if k in vals else "" for k in LOSS_KEYS], f"{dt:.3f}"])
                    if step % opts.log_every == 0 or step == 1:
                        parts = " ".join(f"{k.split('_')[0]} {v:.3f}" for k, v in vals.items())
                        main_wall = wall - warm_wall
                        done_here = max(1, step - start_step)
                        eta = (total_steps - step) * (main_wall / done_here)
                        log(f"step {step}/{total_steps} ep {epoch} | loss {total:.3f} ({parts}) | {dt:.2f} s/step | "
                            f"ETA {eta / 60:.0f} min")
                    if opts.vis_every and (step % opts.vis_every == 0 or step == 1):
                        save_visualisation(run_dir / "vis" / f"step-{step:06d}.png",
                                           StepResult(vals, total, batch["source"].cpu(), batch["driving"].cpu(),
                                                      gen["prediction"].cpu(), gen["kp_source"].cpu(),
                                                      gen["kp_driving"].cpu(), gen["occlusion"].cpu()), cfg.num_tps)
                if step >= total_steps or stop["flag"]:
                    break
                if due():
                    checkpoint("time" if not opts.checkpoint_steps else "steps")
            else:
                # the epoch is complete
                if d.main and epoch_count:
                    means = {k: v / epoch_count for k, v in epoch_sums.items()}
                    _append_csv(run_dir / "epochs.csv", ["epoch", "steps", "lr", "total", *LOSS_KEYS],
                                [epoch, step, f"{optimizer.param_groups[0]['lr']:.3g}", f"{means['total']:.5f}",
                                 *[f"{means[k]:.5f}" if k in means else "" for k in LOSS_KEYS]])
                    log(f"epoch {epoch} done: mean loss {means['total']:.4f} over {epoch_count} steps")
                epoch += 1
                step_in_epoch = 0
                epoch_sums, epoch_count = {}, 0
                scheduler.step()
                if sched_bg:
                    with warnings.catch_warnings():  # before bg_start its optimizer has not stepped yet
                        warnings.simplefilter("ignore", UserWarning)
                        sched_bg.step()
                continue
            break
    finally:
        for s, h in old_handlers.items():
            signal.signal(s, h)
    checkpoint("stopped by signal" if stop["flag"] else "end")
    if d.world > 1:
        dist.barrier()
    log(f"done: {step} steps, {wall / 60:.1f} min of training")
    if stop["signum"] is not None:  # checkpointed: now exit as the signal asks (130 / 143 / 129)
        raise Interrupted(stop["signum"])
    return ckpt_path


def with_train_params(cfg: ModelConfig, assignments: list[str]) -> ModelConfig:
    """``--train-param KEY=VALUE`` overrides of the config's ``train_params`` (VALUE is YAML)."""
    import dataclasses

    tp = dict(cfg.train_params)
    for item in assignments:
        key, sep, value = item.partition("=")
        if not sep or not key:
            raise SplinecamError(f"--train-param {item!r}: expected KEY=VALUE, e.g. dropout_epoch=0")
        tp[key.strip()] = yaml.safe_load(value)
    return dataclasses.replace(cfg, train_params=tp)


def _reschedule(schedulers, milestones: list[int], epoch: int, base_lr: float) -> None:
    """Give resumed MultiStepLR schedulers new milestones (and the lr they imply at ``epoch``)."""
    from collections import Counter

    for sch in schedulers:
        if sch is None:
            continue
        sch.milestones = Counter(milestones)
        lr = base_lr * sch.gamma ** sum(1 for m in milestones if m <= epoch)
        for group in sch.optimizer.param_groups:
            group["lr"] = lr
        sch._last_lr = [lr for _ in sch.optimizer.param_groups]


class _EpochSampler(torch.utils.data.Sampler):
    """A shuffled order that depends only on (seed, epoch): resumable mid-epoch."""

    def __init__(self, dataset, seed: int):
        self.n = len(dataset)
        self.seed = seed
        self.epoch = 0

    def set_epoch(self, epoch: int) -> None:
        self.epoch = epoch

    def __iter__(self):
        g = torch.Generator().manual_seed(self.seed * 7919 + self.epoch)
        return iter(torch.randperm(self.n, generator=g).tolist())

    def __len__(self) -> int:
        return self.n


def options_from_args(args) -> TrainOptions:
    fields = TrainOptions.__dataclass_fields__
    return TrainOptions(**{k: getattr(args, k) for k in fields if hasattr(args, k)})


def run(args) -> int:
    """CLI entry of ``train``."""
    cfg = load_config(args.config)
    opts = options_from_args(args)
    try:
        path = train(cfg, opts)
    finally:
        if dist.is_initialized():
            dist.destroy_process_group()
    if int(os.environ.get("RANK", "0")) == 0:
        print(f"checkpoint: {path}")
    return 0
