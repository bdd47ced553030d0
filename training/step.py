"""One training step: :class:`FullModel` (the networks + losses DDP wraps), the optimisers and lr
schedulers (:class:`Optimisers`), and :func:`optimise` (backward, gradient clipping, updates).

Autocast (``--bf16``) runs on the device the model is on — CPU or CUDA. Before this module it was
always ``torch.autocast("cpu")``, which on a CUDA run did nothing: ``--bf16`` on CUDA trained in
float32. It now really is bf16 there (faster, less memory, numbers slightly different from a float32
run). TPS solve / warp and the Gaussians stay float32 on every device (outside autocast).
"""

from __future__ import annotations

import contextlib
import math
import warnings
from collections import Counter
from dataclasses import dataclass

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from splinecam.engines.relative_motion import relative_keypoints, relative_scale
from splinecam.engines.tpsmm.geometry import RandomTPS, kp2gaussian, solve_tps
from splinecam.engines.tpsmm.networks import TPSMM
from splinecam.training import losses as L
from splinecam.training.checkpoint import OptimiserStates
from splinecam.training.keypoints import augment, landmark_l1
from splinecam.training.options import TrainSchedule

ADAM_BETAS = (0.5, 0.999)
WEIGHT_DECAY = 1e-4
CLIP_NORM = 10  # max-norm (inf norm) of the keypoint, dense motion and background gradients, as the official code


class ImagePyramidFrozen(L.ImagePyramid):
    """The loss pyramid with its fixed anti-aliasing kernels excluded from gradients / DDP."""

    def __init__(self, scales):
        super().__init__(scales)
        for p in self.parameters():
            p.requires_grad_(False)


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
        """bf16 autocast on the device the model is on (``--bf16``), else nothing."""
        if not self.bf16:
            return contextlib.nullcontext()
        return torch.autocast(self.mirror.device.type, dtype=torch.bfloat16)

    def forward(self, batch: dict[str, torch.Tensor], epoch: int, transform: RandomTPS | None,
                aug_rng: np.random.Generator | None = None, warmstart: bool = False):
        """One step's weighted losses. ``aug_rng`` draws the landmark augmentation (``--landmark-augment``);
        with ``warmstart`` the batch is ``images`` (N,3,S,S) + ``landmarks`` (N,468,2) from
        :func:`splinecam.training.keypoints.landmark_batch` and only the keypoint detector is trained."""
        if warmstart:
            return self._warmstart_losses(batch, aug_rng), {}
        source, driving = batch["source"], batch["driving"]
        kp_source, kp_driving = self._keypoints(batch)
        bg_param = None
        use_bg = self.bg_predictor is not None and epoch >= self.schedule.bg_start
        if use_bg:
            with self.amp():
                bg_param = self.bg_predictor(source, driving).float()
        dm = self.dense_motion_network
        small = dm.downsample(source)
        heat_source = kp2gaussian(kp_source, *small.shape[2:], dm.kp_variance)
        motion = self._motion(small, heat_source, kp_source, kp_driving, bg_param, epoch)
        with self.amp():
            gen = self.inpainting_network(source, motion, keep_warped=True)
        prediction = gen.prediction.float()
        out = self._image_losses(prediction, driving)
        out.update(self._motion_losses(batch, kp_source, kp_driving, transform, motion, gen, bg_param if use_bg else None,
                                       aug_rng))
        lw = self.schedule.loss_weights
        if lw["fold_cross"] and kp_source.shape[0] > 1 and getattr(motion, "deformation", None) is not None:
            cross = self._motion(small, heat_source, kp_source, self._cross_person_keypoints(kp_source, kp_driving),
                                 None, epoch)
            out["fold_cross"] = lw["fold_cross"] * L.fold_loss(cross.deformation)
        generated = {"prediction": prediction.detach(), "kp_source": kp_source.detach(),
                     "kp_driving": kp_driving.detach(),
                     # the occlusion map; the keypoint-mask model occludes nothing: its driving masks
                     "occlusion": (motion.occlusion_maps[-1] if motion.occlusion_maps
                                   else motion.preview).detach().float()}
        return out, generated

    def _motion(self, small, heat_source, kp_source, kp_driving, bg_param, epoch: int):
        """The dense motion of the sources (downsampled ``small``, their keypoint heatmaps) driven by
        ``kp_driving``; the TPS solve stays float32, outside autocast."""
        dm = self.dense_motion_network
        h, w = small.shape[2:]
        tps = solve_tps(kp_driving, kp_source, self.num_tps, getattr(dm, "tps_regularise", "all"),
                        getattr(dm, "tps_affine", None))
        trans = dm.transformations(tps, h, w, bg_param)
        with self.amp():
            return dm.motion(small, heat_source, kp_driving, trans, self.schedule.dropout_p(epoch))

    @staticmethod
    def _cross_person_keypoints(kp_source: torch.Tensor, kp_driving: torch.Tensor) -> torch.Tensor:
        """(N,K,2): each source driven by *another* sample's motion, as a call drives an avatar — relative
        keypoints kp_src[i] + (kp_drv[j] − kp_src[j]) · s (j = i − 1 in the batch, the official relative scale
        s from the hull areas; ``live/normalise.py`` does the same per frame). The training pairs are one
        person's two frames, so their grid is near the identity and their fold term is ~0 within a few dozen
        steps; the folds a user sees come from someone else's face driving the avatar. No target image is
        needed: ``fold_cross`` runs only the dense motion on these (no generator)."""
        ref, drv = kp_source.roll(1, 0).detach(), kp_driving.roll(1, 0).detach()
        scale = torch.tensor([relative_scale(a, b)[0] for a, b in zip(kp_source.detach().cpu().numpy(), ref.cpu().numpy())],
                             dtype=kp_source.dtype, device=kp_source.device).view(-1, 1, 1)
        return relative_keypoints(kp_source, drv, ref, scale)

    def _warmstart_losses(self, batch, aug_rng) -> dict[str, torch.Tensor]:
        images, lms = batch["images"], batch["landmarks"]
        if self.geometric_aug and aug_rng is not None:
            images, lms = augment(images.cpu(), lms.cpu(), self.mirror.cpu(), aug_rng)
            images, lms = images.to(self.mirror.device), lms.to(self.mirror.device)
        with self.amp():
            kp = self.kp_detector(images).float()
        return {"landmark": landmark_l1(kp, lms, self.landmark_indices)}

    def _keypoints(self, batch) -> tuple[torch.Tensor, torch.Tensor]:
        """Source and driving keypoints: the keypoint network's, or the frames' face-mesh landmarks."""
        if self.landmark_keypoints:
            return (batch["source_landmarks"][:, self.keypoint_landmarks].float(),
                    batch["driving_landmarks"][:, self.keypoint_landmarks].float())
        with self.amp(), (torch.no_grad() if self.freeze_keypoints else contextlib.nullcontext()):
            return self.kp_detector(batch["source"]).float(), self.kp_detector(batch["driving"]).float()

    def _image_losses(self, prediction, driving) -> dict[str, torch.Tensor]:
        """Perceptual pyramid and pixel pyramid L1 of the prediction against the driving frame."""
        lw = self.schedule.loss_weights
        out: dict[str, torch.Tensor] = {}
        pred_pyr = self.pyramid(prediction)
        real_pyr = self.pyramid(driving)
        if any(lw["perceptual"]):
            with self.amp():
                out["perceptual"] = L.perceptual_pyramid_loss(pred_pyr, real_pyr, self.perceptual, lw["perceptual"])
        if lw["pixel"]:
            out["pixel"] = lw["pixel"] * L.pixel_pyramid_loss(pred_pyr, real_pyr)
        return out

    def _motion_losses(self, batch, kp_source, kp_driving, transform, motion, gen, bg_param,
                       aug_rng) -> dict[str, torch.Tensor]:
        """Equivariance, warp, background (``bg_param`` None: not in use yet), fold and landmark losses."""
        lw = self.schedule.loss_weights
        source, driving = batch["source"], batch["driving"]
        trains_keypoints = not self.freeze_keypoints and self.kp_detector
        out: dict[str, torch.Tensor] = {}
        if lw["equivariance_value"] and transform is not None and trains_keypoints:
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
        if bg_param is not None and lw["bg"]:
            with self.amp():
                reverse = self.bg_predictor(driving, source).float()
            out["bg"] = lw["bg"] * L.background_loss(bg_param, reverse)
        if lw["fold"] and getattr(motion, "deformation", None) is not None:
            out["fold"] = lw["fold"] * L.fold_loss(motion.deformation)
        if lw["landmark"] and self.landmark_indices.numel() and trains_keypoints:
            out["landmark"] = lw["landmark"] * self._landmark_loss(batch, kp_source, kp_driving, aug_rng)
        return out

    def _landmark_loss(self, batch, kp_source, kp_driving, aug_rng) -> torch.Tensor:
        both = torch.cat([kp_source, kp_driving])
        lms = torch.cat([batch["source_landmarks"], batch["driving_landmarks"]])
        value = landmark_l1(both, lms, self.landmark_indices)
        if self.geometric_aug and aug_rng is not None:
            driving = batch["driving"]
            images, moved = augment(driving.cpu(), batch["driving_landmarks"].cpu(), self.mirror.cpu(), aug_rng)
            with self.amp():
                kp_aug = self.kp_detector(images.to(driving.device)).float()
            value = value + landmark_l1(kp_aug, moved, self.landmark_indices)
        return value


def _adam(params, lr: float) -> torch.optim.Adam:
    return torch.optim.Adam(params, lr=lr, betas=ADAM_BETAS, weight_decay=WEIGHT_DECAY)


@dataclass
class Optimisers:
    """Adam over keypoint + dense motion + inpainting, a second Adam for the background predictor, a
    MultiStepLR(epoch_milestones, 0.1) for each, and the warm start's Adam (keypoint detector only)."""

    main: torch.optim.Adam
    scheduler: torch.optim.lr_scheduler.MultiStepLR
    bg: torch.optim.Adam | None
    scheduler_bg: torch.optim.lr_scheduler.MultiStepLR | None
    warm: torch.optim.Adam
    keypoint_params: list[nn.Parameter]
    dense_params: list[nn.Parameter]  # the dense motion network's (none: the keypoint-mask model's KeypointMasks)

    @classmethod
    def build(cls, model: TPSMM, schedule: TrainSchedule, warmstart_lr: float) -> "Optimisers":
        keypoint_params = list(model.kp_detector.parameters()) if model.kp_detector is not None else []
        dense_params = list(model.dense_motion_network.parameters())
        params = [*keypoint_params, *dense_params, *model.inpainting_network.parameters()]
        main = _adam(params, schedule.lr)
        bg = _adam(model.bg_predictor.parameters(), schedule.lr) if model.bg_predictor is not None else None
        warm = torch.optim.Adam(keypoint_params or [torch.zeros(1, requires_grad=True)], lr=warmstart_lr)
        scheduler = torch.optim.lr_scheduler.MultiStepLR(main, schedule.epoch_milestones, gamma=0.1)
        scheduler_bg = torch.optim.lr_scheduler.MultiStepLR(bg, schedule.epoch_milestones, gamma=0.1) if bg else None
        return cls(main, scheduler, bg, scheduler_bg, warm, keypoint_params, dense_params)

    @property
    def lr(self) -> float:
        return self.main.param_groups[0]["lr"]

    def states(self) -> OptimiserStates:
        return OptimiserStates(self.main.state_dict(), self.scheduler.state_dict(),
                               self.bg.state_dict() if self.bg else None,
                               self.scheduler_bg.state_dict() if self.scheduler_bg else None,
                               self.warm.state_dict())

    def load(self, states: OptimiserStates) -> None:
        """Continue from a checkpoint's states (an older run without a warm start or background: kept fresh)."""
        self.main.load_state_dict(states.optimizer)
        self.scheduler.load_state_dict(states.scheduler)
        if self.bg and states.optimizer_bg:
            self.bg.load_state_dict(states.optimizer_bg)
            self.scheduler_bg.load_state_dict(states.scheduler_bg)
        if states.optimizer_warmstart:
            self.warm.load_state_dict(states.optimizer_warmstart)

    def reschedule(self, milestones: list[int], epoch: int, base_lr: float) -> None:
        """New milestones for a resumed run (``--epoch-milestones``), and the lr they imply at ``epoch``."""
        reschedule([self.scheduler, self.scheduler_bg], milestones, epoch, base_lr)

    def end_epoch(self) -> None:
        self.scheduler.step()
        if self.scheduler_bg:
            with warnings.catch_warnings():  # before bg_start its optimizer has not stepped yet
                warnings.simplefilter("ignore", UserWarning)
                self.scheduler_bg.step()


def reschedule(schedulers, milestones: list[int], epoch: int, base_lr: float) -> None:
    """Give resumed MultiStepLR schedulers new milestones (and the lr they imply at ``epoch``)."""
    for sch in schedulers:
        if sch is None:
            continue
        sch.milestones = Counter(milestones)
        lr = base_lr * sch.gamma ** sum(1 for m in milestones if m <= epoch)
        for group in sch.optimizer.param_groups:
            group["lr"] = lr
        sch._last_lr = [lr for _ in sch.optimizer.param_groups]


def optimise(loss: torch.Tensor, model: TPSMM, optim: Optimisers, update_bg: bool, freeze_keypoints: bool) -> None:
    """Backward, clip (inf norm ≤ 10) and update the main networks, and the background predictor when
    ``update_bg`` (from ``bg_start``). Frozen keypoints get no update and no weight decay."""
    optim.main.zero_grad(set_to_none=True)
    if optim.bg:
        optim.bg.zero_grad(set_to_none=True)
    loss.backward()
    if freeze_keypoints:  # DDP may hand back zero gradients
        for param in optim.keypoint_params:
            param.grad = None
    if optim.keypoint_params:
        torch.nn.utils.clip_grad_norm_(optim.keypoint_params, max_norm=CLIP_NORM, norm_type=math.inf)
    if optim.dense_params:
        torch.nn.utils.clip_grad_norm_(optim.dense_params, max_norm=CLIP_NORM, norm_type=math.inf)
    optim.main.step()
    if optim.bg and update_bg:
        torch.nn.utils.clip_grad_norm_(model.bg_predictor.parameters(), max_norm=CLIP_NORM, norm_type=math.inf)
        optim.bg.step()
