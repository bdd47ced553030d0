"""What the motion and generator networks return, and TPS dropout: shared by the official TPSMM modules
(:mod:`splinecam.engines.tpsmm.networks`) and the CPU config's (:mod:`splinecam.engines.tpsmm.light`)."""

from __future__ import annotations

from dataclasses import dataclass, field

import torch


@dataclass
class DenseMotion:
    """Dense motion network outputs.

    deformation: (N,s,s,2) sampling grid (optical flow, driving → source);
    occlusion_maps: list of (N,1,·,·) at S/8, S/4, S/2, S (multi-mask; one map otherwise);
    contribution_maps: (N,T+1,s,s) softmax weights; deformed_source: (N,T+1,3,s,s) or None;
    transformations: (N,T+1,s,s,2) (identity/background grid first) or None.
    """

    deformation: torch.Tensor
    occlusion_maps: list[torch.Tensor]
    contribution_maps: torch.Tensor
    deformed_source: torch.Tensor | None = None
    transformations: torch.Tensor | None = None


@dataclass
class Inpainting:
    """Inpainting network outputs: prediction (N,3,S,S) in [0,1]; deformed (N,3,S,S) the warped
    source; warped_encoder_maps (training only: detached warped+occluded encoder maps, coarse first);
    blend_mask (the CPU warp-refine generator only): prediction = m·deformed + (1−m)·refinement."""

    prediction: torch.Tensor
    deformed: torch.Tensor
    warped_encoder_maps: list[torch.Tensor] = field(default_factory=list)
    blend_mask: torch.Tensor | None = None  # warp-refine only: (N,1,S,S), the warped source's weight


def dropout_softmax(logits: torch.Tensor, p: float) -> torch.Tensor:
    """TPS dropout (Eq. 7-8): drop whole TPS contribution maps with probability p (never the bg one).

    Kept as the official code computes it: the 1/(1-p) rescale is applied after the
    exponentials are taken, so it has no effect on the output.
    """
    drop = (torch.rand(logits.shape[0], logits.shape[1], device=logits.device) < (1 - p)).to(logits.dtype)
    drop[..., 0] = 1
    drop = drop[:, :, None, None]
    x = logits - logits.max(1, keepdim=True).values
    x_exp = x.exp() * drop
    return x_exp / (x_exp.sum(dim=1, keepdim=True) + 1e-6)
