"""The TPSMM training losses (paper §3.3; official ``GeneratorFullModel``) and our additions.

Shapes: N = batch, K = keypoints, S = image size. Images are (N,3,S,S) in [0,1].
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from splinecam.engines.tpsmm.geometry import RandomTPS, fold_fraction_and_depth
from splinecam.engines.tpsmm.layers import SeparableAntiAlias


class ImagePyramid(nn.Module):
    """Anti-aliased copies of an image at ``scales`` (official ``ImagePyramide``): {scale: (N,C,S·s,S·s)}."""

    def __init__(self, scales: list[float], num_channels: int = 3):
        super().__init__()
        self.scales = [float(s) for s in scales]
        # the official anti-aliasing, computed separably and strided (same values up to rounding, ~50× faster)
        self.downs = nn.ModuleDict({str(s).replace(".", "-"): SeparableAntiAlias(num_channels, s)
                                    for s in self.scales if s != 1})

    def forward(self, x: torch.Tensor) -> dict[float, torch.Tensor]:
        return {s: x if s == 1 else self.downs[str(s).replace(".", "-")](x) for s in self.scales}


def perceptual_pyramid_loss(pred_pyr: dict[float, torch.Tensor], real_pyr: dict[float, torch.Tensor],
                            features: nn.Module, weights: list[float]) -> torch.Tensor:
    """Σ_scales Σ_i w_i · mean|φ_i(pred) − φ_i(real)| over the 5 VGG slices (relu1_1 … relu5_1)."""
    total = pred_pyr[next(iter(pred_pyr))].new_zeros(())
    for s in pred_pyr:
        x = features(pred_pyr[s])
        with torch.no_grad():
            y = features(real_pyr[s])
        for w, a, b in zip(weights, x, y):
            if w:
                total = total + w * (a.float() - b.float()).abs().mean()
    return total


def pixel_pyramid_loss(pred_pyr: dict[float, torch.Tensor], real_pyr: dict[float, torch.Tensor]) -> torch.Tensor:
    """Σ_scales mean|pred − real| (our addition; useful when the perceptual net has random weights)."""
    return sum((pred_pyr[s].float() - real_pyr[s].float()).abs().mean() for s in pred_pyr)


def equivariance_loss(kp_detector: nn.Module, driving: torch.Tensor, kp_driving: torch.Tensor,
                      transform: RandomTPS) -> torch.Tensor:
    """mean|kp(driving) − T(kp(T⁻¹ driving))| with a random TPS T (official ``equivariance_value``).

    driving (N,3,S,S), kp_driving (N,K,2).
    """
    grid = transform.transform_frame(driving)
    transformed = F.grid_sample(driving, grid.to(driving.dtype), padding_mode="reflection", align_corners=True)
    kp_t = kp_detector(transformed)
    return (kp_driving.float() - transform.warp_coordinates(kp_t.float())).abs().mean()


def warp_loss(encoder_maps: list[torch.Tensor], warped_maps: list[torch.Tensor]) -> torch.Tensor:
    """Σ_levels mean|E(driving)·occ − warp(E(source))·occ| (official ``warp_loss``).

    encoder_maps: fine first (InpaintingNetwork.encode_driving); warped_maps: coarse first (decode
    with keep_warped=True). As in the official code both sides are detached, so this term is
    reported but carries no gradient.
    """
    return sum((e.float() - warped_maps[-i - 1].float()).abs().mean() for i, e in enumerate(encoder_maps))


def background_loss(bg_param: torch.Tensor, bg_param_reverse: torch.Tensor) -> torch.Tensor:
    """mean|I − A(s→d)·A(d→s)| (official ``bg``): the two background affines should be inverses."""
    value = torch.matmul(bg_param.float(), bg_param_reverse.float())
    eye = torch.eye(3, dtype=value.dtype, device=value.device).view(1, 3, 3)
    return (eye - value).abs().mean()


def fold_loss(deformation: torch.Tensor) -> torch.Tensor:
    """mean over samples and cells of relu(−det J / det J_identity): zero for any grid that does not fold
    (the identity, every affine map that keeps orientation, a smooth TPS), growing with how far a fold
    turns the grid inside out. ``train_params.loss_weights.fold`` (0 by default: the official recipe)."""
    return fold_fraction_and_depth(deformation)[1].mean()


def random_scale(kp: torch.Tensor, scale: float, generator: torch.Generator | None = None) -> torch.Tensor:
    """Official AVD ``random_scale``: multiply x and y by independent factors in [1−s, 1+s]. (N,K,2)."""
    theta = torch.rand(kp.shape[0], 2, generator=generator) * (2 * scale) + (1 - scale)
    theta = torch.diag_embed(theta).unsqueeze(1).to(kp)
    return torch.matmul(theta, kp.unsqueeze(-1)).squeeze(-1)
