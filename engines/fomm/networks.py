"""FOMM's two networks, numerically identical to the official implementation.

Parameter names match the official checkpoints (``vox-cpk.pth.tar``, ``vox-adv-cpk.pth.tar``): the
top-level modules are ``kp_detector`` (:class:`KPDetector`) and ``generator``
(:class:`OcclusionAwareGenerator`, which holds ``dense_motion_network``). Shapes: N = batch, K = keypoints
(10), S = image size (256), s = dense-motion size (S × scale_factor, 64), S' = the generator's
feature size (S / 2^num_down_blocks, 64). Keypoints are (x, y) in [-1, 1], jacobians 2×2.

What is shared with TPSMM is imported from it: the conv blocks and hourglass
(:mod:`splinecam.engines.tpsmm.layers`, built here with batch norm as the official FOMM code builds
them), anti-aliased downsampling, coordinate grids and Gaussian heatmaps
(:mod:`splinecam.engines.tpsmm.geometry`). What is FOMM's own: the heatmap keypoint detector with its
jacobian head, the local affine warps, the single occlusion map, the encoder/bottleneck/decoder
generator. The official FOMM code calls ``grid_sample`` / ``interpolate`` without ``align_corners``,
which since torch 1.3 means ``align_corners=False`` (TPSMM passes True): kept, explicitly.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import nn

from splinecam.engines.fomm.config import FommConfig
from splinecam.engines.tpsmm.geometry import deform, kp2gaussian, make_coordinate_grid
from splinecam.engines.tpsmm.layers import (
    AntiAliasInterpolation2d,
    DownBlock2d,
    Hourglass,
    ResBlock2d,
    SameBlock2d,
    UpBlock2d,
    batch_norm,
)

ALIGN_CORNERS = False  # the official FOMM code's (torch's default since 1.3)
KP_VARIANCE = 0.01


@dataclass
class FommKeypoints:
    """Keypoint detector output: value (N,K,2) in (x, y) order; jacobian (N,K,2,2) or None."""

    value: torch.Tensor
    jacobian: torch.Tensor | None = None

    def packed(self) -> torch.Tensor:
        """(N,K,6): x, y, then the jacobian row-major (identity when the model estimates none)."""
        n, k = self.value.shape[:2]
        jac = self.jacobian
        if jac is None:
            jac = torch.eye(2, dtype=self.value.dtype, device=self.value.device).expand(n, k, 2, 2)
        return torch.cat([self.value, jac.reshape(n, k, 4).to(self.value.dtype)], dim=-1)

    @classmethod
    def unpack(cls, kp: torch.Tensor) -> "FommKeypoints":
        """The inverse of :meth:`packed`: (N,K,6) → value (N,K,2), jacobian (N,K,2,2)."""
        n, k = kp.shape[:2]
        return cls(kp[..., :2], kp[..., 2:6].reshape(n, k, 2, 2))


@dataclass
class FommDenseMotion:
    """Dense motion network outputs (official ``dense_motion`` dict).

    deformation (N,s,s,2) sampling grid; mask (N,K+1,s,s) softmax weights (identity first);
    occlusion_map (N,1,s,s) or None; sparse_deformed (N,K+1,3,s,s) the source under each local warp, or None.
    """

    deformation: torch.Tensor
    mask: torch.Tensor
    occlusion_map: torch.Tensor | None
    sparse_deformed: torch.Tensor | None = None


@dataclass
class FommGeneration:
    """Generator outputs: prediction (N,3,S,S) in [0,1]; deformed (N,3,S,S) the warped source (or None);
    motion: the dense motion behind them."""

    prediction: torch.Tensor
    deformed: torch.Tensor | None
    motion: FommDenseMotion


def sparse_motions(height: int, width: int, kp_driving: torch.Tensor, kp_source: torch.Tensor,
                   jacobian: torch.Tensor | None) -> torch.Tensor:
    """Eq. 4: the identity grid, then one local affine warp per keypoint: (N,K+1,h,w,2).

    warp_k(z) = kp_source_k + J_k · (z − kp_driving_k), with J_k = J_source,k · J_driving,k⁻¹ (N,K,2,2)
    (None: no jacobians, J_k = I). The 2×2 product is written out elementwise (no 6-D matmul) so the
    exported graph holds only elementwise ops; the inverse is computed by the caller (the host).
    """
    n, k = kp_driving.shape[:2]
    grid = make_coordinate_grid(height, width, dtype=kp_driving.dtype, device=kp_driving.device)
    identity = grid.view(1, 1, height, width, 2)
    coords = identity - kp_driving.view(n, k, 1, 1, 2)  # (N,K,h,w,2)
    if jacobian is not None:
        j = jacobian.to(coords.dtype).view(n, k, 1, 1, 4)
        cx, cy = coords[..., 0], coords[..., 1]
        coords = torch.stack([j[..., 0] * cx + j[..., 1] * cy, j[..., 2] * cx + j[..., 3] * cy], dim=-1)
    driving_to_source = coords + kp_source.view(n, k, 1, 1, 2)
    return torch.cat([identity.expand(n, 1, height, width, 2), driving_to_source], dim=1)


def source_to_driving_jacobian(kp_source: FommKeypoints, kp_driving: FommKeypoints) -> torch.Tensor | None:
    """J_source · J_driving⁻¹ (N,K,2,2), in float32 (the official ``torch.inverse``); None without jacobians.

    For the uncached reference path; the backends compute it on the host (:mod:`splinecam.engines.fomm.host`).
    """
    if kp_driving.jacobian is None or kp_source.jacobian is None:
        return None
    return torch.matmul(kp_source.jacobian.float(), torch.inverse(kp_driving.jacobian.float()))


class KPDetector(nn.Module):
    """Keypoints and jacobians: image (N,3,S,S) in [0,1] → (N,K,6) packed (:meth:`detect` for the parts).

    The image is anti-aliased to S × scale_factor, an hourglass gives features, a 7×7 conv one heatmap
    per keypoint (softmax with ``temperature`` over all cells); the keypoint is the heatmap-weighted mean
    of the cell coordinates, its jacobian the heatmap-weighted mean of 4 jacobian maps.
    """

    def __init__(self, block_expansion: int, num_kp: int, num_channels: int, max_features: int, num_blocks: int,
                 temperature: float, estimate_jacobian: bool = False, scale_factor: float = 1,
                 single_jacobian_map: bool = False, pad: int = 0):
        super().__init__()
        self.predictor = Hourglass(block_expansion, num_channels, num_blocks, max_features, norm=batch_norm)
        features = self.predictor.out_channels[-1]
        self.kp = nn.Conv2d(features, num_kp, kernel_size=(7, 7), padding=pad)
        if estimate_jacobian:
            self.num_jacobian_maps = 1 if single_jacobian_map else num_kp
            self.jacobian = nn.Conv2d(features, 4 * self.num_jacobian_maps, kernel_size=(7, 7), padding=pad)
            with torch.no_grad():
                self.jacobian.weight.zero_()
                self.jacobian.bias.copy_(torch.tensor([1, 0, 0, 1] * self.num_jacobian_maps, dtype=torch.float32))
        else:
            self.jacobian = None
        self.num_kp = num_kp
        self.temperature = temperature
        self.scale_factor = scale_factor
        if scale_factor != 1:
            self.down = AntiAliasInterpolation2d(num_channels, scale_factor)

    def detect(self, x: torch.Tensor) -> FommKeypoints:
        if self.scale_factor != 1:
            x = self.down(x)
        feature_map = self.predictor(x)[-1]
        prediction = self.kp(feature_map)
        n, k, h, w = prediction.shape
        heatmap = F.softmax(prediction.view(n, k, -1) / self.temperature, dim=2).view(n, k, h, w)
        grid = make_coordinate_grid(h, w, dtype=heatmap.dtype, device=heatmap.device).view(1, 1, h, w, 2)
        value = (heatmap.unsqueeze(-1) * grid).sum(dim=(2, 3))
        jacobian = None
        if self.jacobian is not None:
            jacobian_map = self.jacobian(feature_map).reshape(n, self.num_jacobian_maps, 4, h, w)
            jacobian = (heatmap.unsqueeze(2) * jacobian_map).view(n, k, 4, -1).sum(dim=-1).view(n, k, 2, 2)
        return FommKeypoints(value, jacobian)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.detect(x).packed()


class DenseMotionNetwork(nn.Module):
    """Mixes the K local affine warps and the identity into dense motion, plus an occlusion map."""

    def __init__(self, block_expansion: int, num_blocks: int, max_features: int, num_kp: int, num_channels: int,
                 estimate_occlusion_map: bool = False, scale_factor: float = 1, kp_variance: float = KP_VARIANCE):
        super().__init__()
        self.hourglass = Hourglass(block_expansion, (num_kp + 1) * (num_channels + 1), num_blocks, max_features,
                                   norm=batch_norm)
        features = self.hourglass.out_channels[-1]
        self.mask = nn.Conv2d(features, num_kp + 1, kernel_size=(7, 7), padding=(3, 3))
        self.occlusion = nn.Conv2d(features, 1, kernel_size=(7, 7), padding=(3, 3)) if estimate_occlusion_map else None
        self.num_kp = num_kp
        self.scale_factor = scale_factor
        self.kp_variance = kp_variance
        if scale_factor != 1:
            self.down = AntiAliasInterpolation2d(num_channels, scale_factor)

    def downsample(self, source: torch.Tensor) -> torch.Tensor:
        """The anti-aliased source the motion is estimated at: (N,3,S,S) → (N,3,s,s)."""
        return self.down(source) if self.scale_factor != 1 else source

    def source_heatmaps(self, kp_source_value: torch.Tensor, height: int, width: int) -> torch.Tensor:
        """The source keypoints' Gaussians (N,K,s,s): cached per avatar."""
        return kp2gaussian(kp_source_value, height, width, self.kp_variance)

    def motion(self, source_small: torch.Tensor, heat_source: torch.Tensor, kp_driving_value: torch.Tensor,
               motions: torch.Tensor, keep_all: bool = True) -> FommDenseMotion:
        """The network proper from precomputed pieces (what the generator engine runs per frame).

        source_small (N,3,s,s); heat_source (N,K,s,s); kp_driving_value (N,K,2); motions (N,K+1,s,s,2)
        from :func:`sparse_motions`.
        """
        n, c, h, w = source_small.shape
        k1 = self.num_kp + 1
        heat = kp2gaussian(kp_driving_value, h, w, self.kp_variance) - heat_source
        heat = torch.cat([torch.zeros_like(heat[:, :1]), heat], dim=1).unsqueeze(2)  # (N,K+1,1,h,w)
        src_rep = source_small.unsqueeze(1).expand(n, k1, c, h, w).reshape(n * k1, c, h, w)
        deformed = F.grid_sample(src_rep, motions.reshape(n * k1, h, w, 2).to(src_rep.dtype),
                                 align_corners=ALIGN_CORNERS).view(n, k1, c, h, w)
        inp = torch.cat([heat.to(deformed.dtype), deformed], dim=2).view(n, k1 * (c + 1), h, w)
        prediction = self.hourglass(inp)[-1]
        mask = F.softmax(self.mask(prediction), dim=1)
        deformation = (motions.permute(0, 1, 4, 2, 3) * mask.unsqueeze(2).to(motions.dtype)).sum(dim=1)
        deformation = deformation.permute(0, 2, 3, 1)
        occlusion = torch.sigmoid(self.occlusion(prediction)) if self.occlusion is not None else None
        return FommDenseMotion(deformation, mask, occlusion, deformed if keep_all else None)

    def forward(self, source: torch.Tensor, kp_driving: FommKeypoints, kp_source: FommKeypoints) -> FommDenseMotion:
        """The official forward: source (N,3,S,S), keypoints with jacobians (the inverse in torch here)."""
        small = self.downsample(source)
        h, w = small.shape[2:]
        motions = sparse_motions(h, w, kp_driving.value, kp_source.value,
                                 source_to_driving_jacobian(kp_source, kp_driving))
        return self.motion(small, self.source_heatmaps(kp_source.value, h, w), kp_driving.value, motions)


class OcclusionAwareGenerator(nn.Module):
    """Encodes the source, warps and occludes its features, decodes the driving frame.

    The encoder depends only on the source: live inference runs :meth:`encode` once per avatar and
    :meth:`decode` per frame.
    """

    def __init__(self, num_channels: int, num_kp: int, block_expansion: int, max_features: int,
                 num_down_blocks: int, num_bottleneck_blocks: int, estimate_occlusion_map: bool = False,
                 dense_motion_params: dict | None = None, estimate_jacobian: bool = False):
        super().__init__()
        self.dense_motion_network = DenseMotionNetwork(num_kp=num_kp, num_channels=num_channels,
                                                       estimate_occlusion_map=estimate_occlusion_map,
                                                       **(dense_motion_params or {}))
        self.first = SameBlock2d(num_channels, block_expansion, kernel_size=(7, 7), padding=(3, 3), norm=batch_norm)
        down = []
        for i in range(num_down_blocks):
            cin = min(max_features, block_expansion * (2 ** i))
            cout = min(max_features, block_expansion * (2 ** (i + 1)))
            down.append(DownBlock2d(cin, cout, kernel_size=(3, 3), padding=(1, 1), norm=batch_norm))
        self.down_blocks = nn.ModuleList(down)
        up = []
        for i in range(num_down_blocks):
            cin = min(max_features, block_expansion * (2 ** (num_down_blocks - i)))
            cout = min(max_features, block_expansion * (2 ** (num_down_blocks - i - 1)))
            up.append(UpBlock2d(cin, cout, kernel_size=(3, 3), padding=(1, 1), norm=batch_norm))
        self.up_blocks = nn.ModuleList(up)
        self.bottleneck = nn.Sequential()
        features = min(max_features, block_expansion * (2 ** num_down_blocks))
        for i in range(num_bottleneck_blocks):
            self.bottleneck.add_module(f"r{i}", ResBlock2d(features, kernel_size=(3, 3), padding=(1, 1),
                                                           norm=batch_norm))
        self.final = nn.Conv2d(block_expansion, num_channels, kernel_size=(7, 7), padding=(3, 3))
        self.num_channels = num_channels

    @staticmethod
    def deform_input(inp: torch.Tensor, deformation: torch.Tensor) -> torch.Tensor:
        """Warp (N,C,H,W) by a grid (N,h,w,2), resizing the grid bilinearly to H×W when needed."""
        return deform(inp, deformation, align_corners=ALIGN_CORNERS)

    def encode(self, source: torch.Tensor) -> torch.Tensor:
        """Source features (N, C', S', S'): first block + down blocks."""
        out = self.first(source)
        for block in self.down_blocks:
            out = block(out)
        return out

    def decode(self, features: torch.Tensor, deformation: torch.Tensor,
               occlusion_map: torch.Tensor | None) -> torch.Tensor:
        """Warp and occlude the cached source features, then bottleneck + up blocks: prediction (N,3,S,S)."""
        out = self.deform_input(features, deformation)
        if occlusion_map is not None:
            if out.shape[2:] != occlusion_map.shape[2:]:
                occlusion_map = F.interpolate(occlusion_map, size=out.shape[2:], mode="bilinear",
                                              align_corners=ALIGN_CORNERS)
            out = out * occlusion_map.to(out.dtype)
        out = self.bottleneck(out)
        for block in self.up_blocks:
            out = block(out)
        return torch.sigmoid(self.final(out))

    def forward(self, source: torch.Tensor, kp_driving: FommKeypoints, kp_source: FommKeypoints,
                keep_deformed: bool = True) -> FommGeneration:
        """The official forward: source (N,3,S,S) and keypoints → prediction, deformed source, motion."""
        motion = self.dense_motion_network(source, kp_driving, kp_source)
        prediction = self.decode(self.encode(source), motion.deformation, motion.occlusion_map)
        deformed = self.deform_input(source, motion.deformation) if keep_deformed else None
        return FommGeneration(prediction, deformed, motion)


class FOMM(nn.Module):
    """FOMM's two networks under the official checkpoint names (``kp_detector``, ``generator``)."""

    MODULES = ("kp_detector", "generator")

    def __init__(self, config: FommConfig):
        super().__init__()
        self.config = config
        kp = config.keypoint
        self.kp_detector = KPDetector(kp.block_expansion, config.num_kp, config.num_channels, kp.max_features,
                                      kp.num_blocks, kp.temperature, config.estimate_jacobian, kp.scale_factor,
                                      kp.single_jacobian_map, kp.pad)
        g, dm = config.generator, config.dense_motion
        self.generator = OcclusionAwareGenerator(
            config.num_channels, config.num_kp, g.block_expansion, g.max_features, g.num_down_blocks,
            g.num_bottleneck_blocks, g.estimate_occlusion_map,
            {"block_expansion": dm.block_expansion, "max_features": dm.max_features, "num_blocks": dm.num_blocks,
             "scale_factor": dm.scale_factor})

    def submodules(self) -> dict[str, nn.Module]:
        """The networks by official name."""
        return {name: getattr(self, name) for name in self.MODULES}

    def animate(self, source: torch.Tensor, kp_source: torch.Tensor, kp_driving: torch.Tensor) -> torch.Tensor:
        """Uncached reference path: source (N,3,S,S), packed keypoints (N,K,6) → prediction (N,3,S,S)."""
        return self.generator(source, FommKeypoints.unpack(kp_driving), FommKeypoints.unpack(kp_source),
                              keep_deformed=False).prediction
