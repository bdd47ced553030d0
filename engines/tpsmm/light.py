"""The CPU-class TPSMM variant (our own configs; official checkpoints never build these modules).

Same structure and interfaces as TPSMM's dense motion and inpainting networks — so the frame generator,
the exported graphs, every backend and the trainer run them unchanged — made for a 2-core laptop CPU:

* keypoints are face-mesh landmarks (``kp_detector_params.head: landmarks``), no keypoint network;
* :class:`LightDenseMotion`: the identity + T TPS warps of the source at S/4 (64² for S = 256) and the
  driving-minus-source keypoint heatmaps summed per TPS, into a small BatchNorm U-Net (3×3 convs only)
  → softmax contribution maps → the dense motion, and one occlusion map;
* :class:`WarpRefineGenerator`: the full-resolution source warped by the dense motion, blended with a
  refinement decoded at S/2 from the cached source features (warped and occluded at S/8, S/4, S/2).
  Where nothing moved, output = the source's own pixels (a still face comes back intact); only what
  the warp cannot explain (a mouth opening, revealed background) is generated.

Every sampling outside the source picture uses border padding (``padding_mode="border"``): a warp that
reaches past the picture's edge repeats the edge, never samples black (the black holes of zero
padding). The official modules keep zero padding, as the official code has it.

Shapes: N batch, S image size, s = S/4 motion size, T TPS, K = 5T keypoints.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from splinecam.engines.tpsmm.geometry import LOG_EPS, TPSParams, kp2gaussian, make_coordinate_grid
from splinecam.engines.tpsmm.layers import SeparableAntiAlias
from splinecam.engines.tpsmm.motion import DenseMotion, Inpainting, dropout_softmax

PADDING = "border"


def grouped_gaussians(kp: torch.Tensor, groups: int, height: int, width: int, variance: float) -> torch.Tensor:
    """Σ over each group of keypoints of exp(−½|p − kp|²/variance): kp (N,K,2) → (N,groups,H,W), float32.

    The same maps as summing :func:`kp2gaussian` per group, computed separably (a Gaussian of a 2-D
    distance is the product of two 1-D ones): two (N,K,·) exponentials and a batched matrix product.
    """
    n, k, _ = kp.shape
    kp = kp.float()
    # arange, not linspace: the ONNX exporter turns linspace into a float64 constant (TensorRT has no float64)
    xs = torch.arange(width, dtype=torch.float32, device=kp.device) * (2.0 / (width - 1)) - 1.0
    ys = torch.arange(height, dtype=torch.float32, device=kp.device) * (2.0 / (height - 1)) - 1.0
    gx = torch.exp(-0.5 * (xs.view(1, 1, -1) - kp[..., :1]) ** 2 / variance)       # (N,K,W)
    gy = torch.exp(-0.5 * (ys.view(1, 1, -1) - kp[..., 1:]) ** 2 / variance)       # (N,K,H)
    p = k // groups
    gy = gy.view(n * groups, p, height).transpose(1, 2)                             # (N·G,H,P)
    return torch.bmm(gy, gx.view(n * groups, p, width)).view(n, groups, height, width)


def tps_grids(tps: TPSParams, height: int, width: int) -> torch.Tensor:
    """Sampling grids of every TPS for an H×W frame: (N,T,H,W,2), float32 — what
    :func:`~splinecam.engines.tpsmm.geometry.tps_warp_grid` computes, with the squared distances to the
    control points as |g|² + |c|² − 2 g·c (matrix products instead of an (N,T,P,M,2) difference)."""
    theta, cp, params = tps.theta.float(), tps.control_points.float(), tps.control_params.float()
    n, t = theta.shape[:2]
    grid = make_coordinate_grid(height, width, dtype=torch.float32, device=theta.device).view(1, 1, -1, 2)
    affine = torch.matmul(grid, theta[..., :2].transpose(2, 3)) + theta[..., 2].unsqueeze(2)   # (N,T,M,2)
    sq = (grid ** 2).sum(-1, keepdim=True) + (cp ** 2).sum(-1).unsqueeze(2) \
        - 2 * torch.matmul(grid, cp.transpose(2, 3))                                            # (N,T,M,P)
    sq = sq.clamp_min(0)
    radial = torch.matmul(sq * torch.log(sq + LOG_EPS), params)                                # (N,T,M,2)
    return (affine + radial).view(n, t, height, width, 2)


def conv_bn(cin: int, cout: int) -> nn.Sequential:
    """3×3 conv → BatchNorm → ReLU, size preserving (folds into one conv at inference)."""
    return nn.Sequential(nn.Conv2d(cin, cout, 3, padding=1, bias=False), nn.BatchNorm2d(cout), nn.ReLU(inplace=True))


def warp(inp: torch.Tensor, grid: torch.Tensor) -> torch.Tensor:
    """Sample (N,C,H,W) at a grid (N,h,w,2) resized to H×W when needed; border padding."""
    h, w = inp.shape[2:]
    if grid.shape[1:3] != (h, w):
        grid = resize_grid(grid, h, w)
    return F.grid_sample(inp, grid.to(inp.dtype), mode="bilinear", padding_mode=PADDING, align_corners=True)


def resize_grid(grid: torch.Tensor, h: int, w: int) -> torch.Tensor:
    """A sampling grid (N,h0,w0,2) at another size, by resizing its displacement from the identity
    (so the identity grid stays exactly the identity at every size)."""
    n, h0, w0, _ = grid.shape
    ident0 = make_coordinate_grid(h0, w0, dtype=grid.dtype, device=grid.device)
    disp = (grid - ident0).permute(0, 3, 1, 2)
    disp = F.interpolate(disp, size=(h, w), mode="bilinear", align_corners=True).permute(0, 2, 3, 1)
    return disp + make_coordinate_grid(h, w, dtype=grid.dtype, device=grid.device)


def upsample2(x: torch.Tensor) -> torch.Tensor:
    """Nearest ×2 upsampling (cheap in every runtime; the convolution after it smooths)."""
    return F.interpolate(x, scale_factor=2.0, mode="nearest")


class SmallUNet(nn.Module):
    """(N,Cin,s,s) → (N,C0,s,s): ``levels`` encoder levels (2× average pool then conv_bn) and a mirrored
    decoder (nearest 2× upsampling, skip concatenation, conv_bn). Channels ``width · 2^i``, capped."""

    def __init__(self, in_channels: int, width: int, max_width: int, levels: int):
        super().__init__()
        chans = [min(max_width, width * 2**i) for i in range(levels + 1)]
        self.first = conv_bn(in_channels, chans[0])
        self.down = nn.ModuleList([conv_bn(chans[i], chans[i + 1]) for i in range(levels)])
        self.up = nn.ModuleList([conv_bn(chans[i + 1] + chans[i], chans[i]) for i in reversed(range(levels))])
        self.out_channels = chans[0]

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        skips = [self.first(x)]
        for block in self.down:
            skips.append(block(F.avg_pool2d(skips[-1], 2)))
        out = skips.pop()
        for block in self.up:
            out = block(torch.cat([upsample2(out), skips.pop()], dim=1))
        return out


class LightDenseMotion(nn.Module):
    """Dense motion of the CPU config; the interface of :class:`~splinecam.engines.tpsmm.networks.DenseMotionNetwork`.

    ``motion`` returns a DenseMotion with deformation (N,s,s,2), occlusion_maps [(N,1,s,s)] and
    contribution_maps (N,T+1,s,s).
    """

    tps_regularise = "all"  # engines/tpsmm/geometry.py TPS_REGULARISE; set per config (cpu-256: "kernel")
    tps_affine = None  # engines/tpsmm/geometry.py AffineGroups: groups solved as an affine map; set per config

    def __init__(self, num_tps: int, num_channels: int = 3, block_expansion: int = 24, max_features: int = 64,
                 num_blocks: int = 3, scale_factor: float = 0.25, kp_variance: float = 0.01):
        super().__init__()
        self.num_tps = num_tps
        self.scale_factor = scale_factor
        self.kp_variance = kp_variance
        self.down = SeparableAntiAlias(num_channels, scale_factor)
        self.unet = SmallUNet(num_channels * (num_tps + 1) + num_tps + 1, block_expansion, max_features, num_blocks)
        self.maps = nn.Conv2d(self.unet.out_channels, num_tps + 1, 3, padding=1)
        self.occlusion = nn.Conv2d(self.unet.out_channels, 1, 3, padding=1)

    def downsample(self, source: torch.Tensor) -> torch.Tensor:
        """(N,3,S,S) → the anti-aliased (N,3,s,s) source the motion is estimated at."""
        return self.down(source)

    def transformations(self, tps: TPSParams, height: int, width: int, bg_param: torch.Tensor | None) -> torch.Tensor:
        """Identity grid followed by the T TPS grids: (N,T+1,h,w,2). No background motion in this config."""
        n = tps.theta.shape[0]
        identity = make_coordinate_grid(height, width, dtype=tps.theta.dtype, device=tps.theta.device)
        identity = identity.view(1, 1, height, width, 2).expand(n, 1, height, width, 2)
        return torch.cat([identity, tps_grids(tps, height, width).to(identity.dtype)], dim=1)

    def motion(self, source_small: torch.Tensor, heat_source: torch.Tensor, kp_driving: torch.Tensor,
               transformations: torch.Tensor, dropout_p: float | None = None, keep_all: bool = True):
        n, c, h, w = source_small.shape
        t1 = self.num_tps + 1
        heat = grouped_gaussians(kp_driving, self.num_tps, h, w, self.kp_variance) \
            - heat_source.float().view(n, self.num_tps, -1, h, w).sum(2)             # (N,T,h,w): per TPS
        heat = torch.cat([torch.zeros_like(heat[:, :1]), heat], dim=1)               # (N,T+1,h,w)
        src = source_small.unsqueeze(1).expand(n, t1, c, h, w).reshape(n * t1, c, h, w)
        deformed = F.grid_sample(src, transformations.reshape(n * t1, h, w, 2).to(src.dtype), mode="bilinear",
                                 padding_mode=PADDING, align_corners=True).view(n, t1, c, h, w)
        feat = self.unet(torch.cat([heat.to(deformed.dtype), deformed.reshape(n, t1 * c, h, w)], dim=1))
        logits = self.maps(feat)
        contribution = (dropout_softmax(logits, dropout_p) if dropout_p is not None
                        else F.softmax(logits, dim=1))
        deformation = (transformations * contribution.unsqueeze(-1).to(transformations.dtype)).sum(dim=1)
        occlusion = torch.sigmoid(self.occlusion(feat))
        return DenseMotion(deformation, [occlusion], contribution,
                           deformed if keep_all else None, transformations if keep_all else None)

    def forward(self, source: torch.Tensor, kp_driving: torch.Tensor, kp_source: torch.Tensor,
                bg_param: torch.Tensor | None = None, dropout_p: float | None = None):
        from splinecam.engines.tpsmm.geometry import solve_tps

        small = self.downsample(source)
        h, w = small.shape[2:]
        heat_source = kp2gaussian(kp_source, h, w, self.kp_variance)
        tps = solve_tps(kp_driving, kp_source, self.num_tps, self.tps_regularise, self.tps_affine)
        return self.motion(small, heat_source, kp_driving, self.transformations(tps, h, w, None), dropout_p)


class WarpRefineGenerator(nn.Module):
    """Generator of the CPU config; the interface of :class:`~splinecam.engines.tpsmm.networks.InpaintingNetwork`.

    ``encode(source)`` → [(N,c1,S/2,S/2), (N,c2,S/4,S/4), (N,c3,S/8,S/8)] (cached per avatar);
    ``decode(features, source, deformation (N,s,s,2), occlusion_maps [(N,1,s,s)])`` → Inpainting with
    prediction (N,3,S,S) = m·warp(source) + (1−m)·refine, m and refine decoded at S/2 and upsampled.
    """

    def __init__(self, num_channels: int = 3, block_expansion: int = 16, max_features: int = 48,
                 num_down_blocks: int = 3, **_):
        super().__init__()
        c = [min(max_features, block_expansion * 2**i) for i in range(3)]
        self.num_down_blocks = 3
        self.channels = c
        self.enc0 = nn.Sequential(nn.Conv2d(num_channels, c[0], 3, stride=2, padding=1, bias=False),
                                  nn.BatchNorm2d(c[0]), nn.ReLU(inplace=True), conv_bn(c[0], c[0]))
        self.enc1 = nn.Sequential(nn.AvgPool2d(2), conv_bn(c[0], c[1]))
        self.enc2 = nn.Sequential(nn.AvgPool2d(2), conv_bn(c[1], c[2]))
        self.dec2 = nn.Sequential(conv_bn(c[2] + 1, c[2]), conv_bn(c[2], c[2]))
        self.dec1 = conv_bn(c[2] + c[1] + 1, c[1])
        self.head = nn.Conv2d(c[1] + c[0] + 1, num_channels + 1, 1)  # 1×1 at S/2 (its context comes from S/4)
        self.num_channels = num_channels

    def encode(self, source: torch.Tensor) -> list[torch.Tensor]:
        f0 = self.enc0(source)
        f1 = self.enc1(f0)
        return [f0, f1, self.enc2(f1)]

    def decode(self, encoder_maps: list[torch.Tensor], source: torch.Tensor, deformation: torch.Tensor,
               occlusion_maps: list[torch.Tensor], keep_warped: bool = False):
        f0, f1, f2 = encoder_maps       # S/2, S/4, S/8
        o1 = occlusion_maps[0].to(f1.dtype)   # S/4
        o2, o0 = F.avg_pool2d(o1, 2), upsample2(o1)
        w2, w1, w0 = warp(f2, deformation) * o2, warp(f1, deformation) * o1, warp(f0, deformation) * o0
        out = self.dec2(torch.cat([w2, o2], 1))
        out = self.dec1(torch.cat([upsample2(out), w1, o1], 1))
        head = self.head(torch.cat([upsample2(out), w0, o0], 1))
        head = F.interpolate(head, size=source.shape[2:], mode="bilinear", align_corners=False)
        refine = torch.sigmoid(head[:, : self.num_channels])
        mask = torch.sigmoid(head[:, self.num_channels:])
        deformed = warp(source, deformation)
        prediction = mask * deformed.to(mask.dtype) + (1 - mask) * refine
        warped = [w.detach() for w in (w2, w1, w0)] if keep_warped else []
        return Inpainting(prediction, deformed, warped, mask)

    def encode_driving(self, driving: torch.Tensor, occlusion_maps: list[torch.Tensor]) -> list[torch.Tensor]:
        """The driving frame's encoder maps, occluded, fine first (the warp loss's target)."""
        o1 = occlusion_maps[0]
        f0, f1, f2 = self.encode(driving)
        return [(f0 * upsample2(o1)).detach(), (f1 * o1).detach(), (f2 * F.avg_pool2d(o1, 2)).detach()]

    def decode_motion(self, encoder_maps: list[torch.Tensor], source: torch.Tensor, motion,
                      keep_warped: bool = False):
        """The generators' common per-frame call (:meth:`decode` with the dense motion's grid and occlusion)."""
        return self.decode(encoder_maps, source, motion.deformation, motion.occlusion_maps, keep_warped)

    def forward(self, source: torch.Tensor, motion, keep_warped: bool = False):
        return self.decode(self.encode(source), source, motion.deformation, motion.occlusion_maps, keep_warped)
