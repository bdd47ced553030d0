"""The per-frame generator: cached source tensors + driving keypoints → animated frame.

This is the module the generator engine is exported from (ONNX → TensorRT) and the one the torch
backend runs. Per avatar, :func:`encode_source` computes once what depends only on the source; per
frame, :class:`FrameGenerator` runs dense motion + inpainting with the TPS parameters solved on
the host (no matrix inverse in the graph). Geometry (TPS warp grids, Gaussians) stays in float32
whatever dtype the networks run in.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
from torch import nn

from splinecam.engines.tpsmm.geometry import TPSParams, kp2gaussian
from splinecam.engines.tpsmm.networks import TPSMM


@dataclass
class SourceTensors:
    """Cached per-avatar inputs of the generator, batch 1, float32.

    image (1,3,S,S) in [0,1]; small (1,3,s,s) anti-aliased source; heat (1,K,s,s) source Gaussians;
    features: inpainting-encoder maps [(1,be,S,S), (1,2be,S/2,S/2), …]; kp (1,K,2).
    """

    image: torch.Tensor
    small: torch.Tensor
    heat: torch.Tensor
    features: list[torch.Tensor]
    kp: torch.Tensor

    def as_inputs(self) -> list[torch.Tensor]:
        """The generator's source inputs in their fixed order."""
        return [self.image, self.small, self.heat, *self.features]


@torch.no_grad()
def encode_source(model: TPSMM, image: torch.Tensor, kp: torch.Tensor | None = None) -> SourceTensors:
    """Per-avatar work, once: keypoints, encoder features, 64×64 anti-aliased source, Gaussians.

    image: (1,3,S,S) float32 in [0,1]; kp (1,K,2): the source keypoints, computed by the keypoint
    detector when None (landmark configs, which have none, must pass them).
    """
    dm = model.dense_motion_network
    kp = model.kp_detector(image) if kp is None else kp.to(image.device, torch.float32)
    small = dm.downsample(image)
    heat = kp2gaussian(kp, small.shape[2], small.shape[3], dm.kp_variance)
    features = model.inpainting_network.encode(image)
    return SourceTensors(image, small, heat, features, kp)


class FrameGenerator(nn.Module):
    """Dense motion + inpainting for one frame from cached source tensors (for ``kpmask-256``: keypoint
    masks + the keypoint-mask generator, :mod:`splinecam.engines.tpsmm.kpmask`; its TPS inputs are unused).

    forward(image (1,3,S,S), small (1,3,s,s), heat (1,K,s,s), *features, kp_driving (1,K,2),
    tps_theta (1,T,2,3), tps_params (1,T,5,2)[, bg_param (1,3,3)]) → prediction (1,3,S,S).
    ``compute_dtype`` is the dtype of the convolutional networks; geometry stays float32.
    """

    def __init__(self, model: TPSMM, with_bg: bool = False, compute_dtype: torch.dtype = torch.float32):
        super().__init__()
        self.dense = model.dense_motion_network
        self.inpaint = model.inpainting_network
        self.num_tps = model.config.num_tps
        self.num_features = model.config.num_source_features
        self.with_bg = with_bg
        self.compute_dtype = compute_dtype

    def input_names(self) -> list[str]:
        names = ["source", "source_small", "source_heat"] + [f"source_feat{i}" for i in range(self.num_features)]
        names += ["kp_driving", "tps_theta", "tps_params"]
        return names + (["bg_param"] if self.with_bg else [])

    def forward(self, image, small, heat, *rest):
        features = list(rest[: self.num_features])
        kp_driving, theta, params = rest[self.num_features: self.num_features + 3]
        bg_param = rest[self.num_features + 3] if self.with_bg else None
        h, w = small.shape[2:]
        tps = TPSParams(theta.float(), kp_driving.float().reshape(1, self.num_tps, -1, 2), params.float())
        transformations = self.dense.transformations(tps, h, w, None if bg_param is None else bg_param.float())
        motion = self.dense.motion(small, heat.float(), kp_driving.float(), transformations, keep_all=False)
        out = self.inpaint.decode_motion(features, image, motion)
        return out.prediction
