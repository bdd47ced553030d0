"""FOMM's per-frame generator: cached source tensors + driving keypoints → animated frame.

The module the FOMM generator engine is exported from (ONNX → TensorRT) and the one the torch
backends run, with the same interface as TPSMM's (:mod:`splinecam.engines.tpsmm.frame_generator`):
per avatar, :func:`encode_source` computes once what depends only on the source (keypoints with
jacobians, the anti-aliased 64×64 source, its Gaussians, the generator's encoder features); per
frame, :class:`FrameGenerator` runs the local affine warps, dense motion and the generator's decoder,
with ``J_src · J_drv⁻¹`` computed on the host (:mod:`splinecam.engines.fomm.host`: no inverse in the
graph). Geometry (warp grids, Gaussians) stays float32 whatever dtype the networks run in.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
from torch import nn

from splinecam.engines.fomm.networks import FOMM, sparse_motions


@dataclass
class SourceTensors:
    """Cached per-avatar inputs of the generator, batch 1.

    small (1,3,s,s) anti-aliased source; heat (1,K,s,s) source Gaussians; features: [(1,C',S',S')] the
    generator's encoder output; kp (1,K,6) packed source keypoints (position + jacobian).
    """

    small: torch.Tensor
    heat: torch.Tensor
    features: list[torch.Tensor]
    kp: torch.Tensor

    def as_inputs(self) -> list[torch.Tensor]:
        """The generator's source inputs in their fixed order (the source keypoint positions last)."""
        return [self.small, self.heat, *self.features, self.kp[..., :2].float().contiguous()]


@torch.no_grad()
def encode_source(model: FOMM, image: torch.Tensor, kp: torch.Tensor | None = None) -> SourceTensors:
    """Per-avatar work, once. image (1,3,S,S) float in [0,1]; kp (1,K,6): the packed source keypoints,
    computed by the keypoint detector when None."""
    dm = model.generator.dense_motion_network
    kp = model.kp_detector(image) if kp is None else kp
    kp = kp.to(image.device, torch.float32)
    small = dm.downsample(image)
    heat = dm.source_heatmaps(kp[..., :2], small.shape[2], small.shape[3])
    return SourceTensors(small, heat, [model.generator.encode(image)], kp)


class FrameGenerator(nn.Module):
    """Local affine warps + dense motion + decoder for one frame from cached source tensors.

    forward(small (1,3,s,s), heat (1,K,s,s), feat0 (1,C',S',S'), kp_source (1,K,2), kp_driving (1,K,2),
    kp_jacobian (1,K,2,2)) → prediction (1,3,S,S). ``with_bg`` is accepted for the common signature (FOMM
    has no background motion); ``compute_dtype`` is the dtype of the convolutional networks.
    """

    def __init__(self, model: FOMM, with_bg: bool = False, compute_dtype: torch.dtype = torch.float32):
        super().__init__()
        self.dense = model.generator.dense_motion_network
        self.generator = model.generator
        self.compute_dtype = compute_dtype

    @staticmethod
    def input_names() -> list[str]:
        return ["source_small", "source_heat", "source_feat0", "source_kp", "kp_driving", "kp_jacobian"]

    def forward(self, small, heat, feat0, kp_source, kp_driving, kp_jacobian):
        h, w = small.shape[2:]
        kp_driving = kp_driving.float()
        motions = sparse_motions(h, w, kp_driving, kp_source.float(), kp_jacobian.float())
        motion = self.dense.motion(small, heat.float(), kp_driving, motions, keep_all=False)
        return self.generator.decode(feat0, motion.deformation, motion.occlusion_map)

