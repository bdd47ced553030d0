"""The five TPSMM networks, numerically identical to the official implementation.

Parameter names match the official checkpoints (``vox.pth.tar`` …), so they load strictly.
Shapes: N = batch, K = keypoints (num_tps × 5), S = image size (256), s = dense-motion size
(S × scale_factor, 64). Keypoints are (x, y) in [-1, 1].

Outputs are typed dataclasses instead of the official dicts; inference drops what only training
needs (the detached duplicate warps) unless asked for.
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import nn

from splinecam.engines.tpsmm.config import ModelConfig
from splinecam.engines.tpsmm.motion import DenseMotion, Inpainting, dropout_softmax  # noqa: F401 (re-exported)
from splinecam.engines.tpsmm.geometry import (
    AffineGroups,
    TPSParams,
    apply_affine_to_grid,
    deform,
    kp2gaussian,
    make_coordinate_grid,
    solve_tps,
    tps_warp_grid,
)
from splinecam.engines.tpsmm.layers import (
    AntiAliasInterpolation2d,
    DownBlock2d,
    Hourglass,
    ResBlock2d,
    ResNet18,
    SameBlock2d,
    UpBlock2d,
)


class KPDetector(nn.Module):
    """ResNet18 keypoint detector: image (N,3,S,S) in [0,1] → (N,K,2) in (-1,1), (x, y) order.

    ``head="fc"`` is the official detector (sigmoid of a linear regression on pooled features);
    ``head="heatmap"`` localises each keypoint by soft-argmax over a heatmap (:class:`HeatmapHead`).
    """

    def __init__(self, num_tps: int, num_channels: int = 3, width: int = 64, depth: int = 2, head: str = "fc"):
        super().__init__()
        self.num_tps = num_tps
        k = num_tps * 5
        self.fg_encoder = ResNet18(num_channels, k * 2 if head == "fc" else None, width, depth)
        self.heatmap_head = HeatmapHead(width, k) if head == "heatmap" else None

    def forward(self, image: torch.Tensor) -> torch.Tensor:
        if self.heatmap_head is not None:
            return self.heatmap_head(self.fg_encoder.stages(image), image.shape[-1])
        out = torch.sigmoid(self.fg_encoder(image)) * 2 - 1
        return out.view(image.shape[0], self.num_tps * 5, 2)


class HeatmapHead(nn.Module):
    """Keypoints from ResNet stages by soft-argmax (ours; not in the official model).

    Stages 2–4 (S/8, S/16, S/32) are merged top-down (1×1 lateral convs, ×2 bilinear upsampling,
    sums: a small feature pyramid), a 3×3 conv block and a 1×1 conv give one heatmap per keypoint
    at S/8; a softmax over its cells and the expected cell centre give (x, y) in grid units
    (pixel centres at ±1, the landmark convention). stages: [(N,w,S/4,S/4), (N,2w,S/8,S/8),
    (N,4w,S/16,S/16), (N,8w,S/32,S/32)] → (N,K,2) float32.
    """

    def __init__(self, width: int, num_kp: int, channels: int = 64):
        super().__init__()
        self.lateral = nn.ModuleList([nn.Conv2d(width * 2 ** i, channels, 1) for i in (1, 2, 3)])
        self.block = nn.Sequential(nn.Conv2d(channels, channels, 3, padding=1), nn.BatchNorm2d(channels), nn.ReLU())
        self.heatmaps = nn.Conv2d(channels, num_kp, 1)

    def forward(self, stages: list[torch.Tensor], image_size: int) -> torch.Tensor:
        x = self.lateral[2](stages[3])
        for i in (1, 0):
            x = F.interpolate(x, scale_factor=2.0, mode="bilinear", align_corners=False) + self.lateral[i](stages[i + 1])
        logits = self.heatmaps(self.block(x)).float()
        n, k, h, w = logits.shape
        prob = torch.softmax(logits.reshape(n, k, h * w), dim=-1).reshape(n, k, h, w)
        x_kp = (prob.sum(dim=2) * _cell_centres(w, image_size, logits.device)).sum(dim=-1)
        y_kp = (prob.sum(dim=3) * _cell_centres(h, image_size, logits.device)).sum(dim=-1)
        return torch.stack([x_kp, y_kp], dim=-1)


def _cell_centres(cells: int, image_size: int, device: torch.device) -> torch.Tensor:
    """(cells,) grid coordinates of the centres of ``cells`` equal cells across ``image_size`` pixels:
    cell j is centred at pixel (j + 0.5)·S/cells, and pixel p is (p − 0.5)/(S − 1)·2 − 1 in grid units."""
    pixels = (torch.arange(cells, dtype=torch.float32, device=device) + 0.5) * (image_size / cells)
    return (pixels - 0.5) / (image_size - 1) * 2 - 1


class BGMotionPredictor(nn.Module):
    """Background affine motion: (source, driving) (N,3,S,S) each → (N,3,3), last row (0,0,1)."""

    def __init__(self, num_channels: int = 3, width: int = 64, depth: int = 2):
        super().__init__()
        self.bg_encoder = ResNet18(2 * num_channels, 6, width, depth)
        with torch.no_grad():
            self.bg_encoder.fc.weight.zero_()
            self.bg_encoder.fc.bias.copy_(torch.tensor([1, 0, 0, 0, 1, 0], dtype=torch.float32))

    def forward(self, source: torch.Tensor, driving: torch.Tensor) -> torch.Tensor:
        n = source.shape[0]
        pred = self.bg_encoder(torch.cat([source, driving], dim=1)).view(n, 2, 3)
        last = torch.tensor([0.0, 0.0, 1.0], dtype=pred.dtype, device=pred.device).view(1, 1, 3).expand(n, 1, 3)
        return torch.cat([pred, last], dim=1)


class DenseMotionNetwork(nn.Module):
    """Combines K+1 transformations (background + T TPS) into dense motion and occlusion masks."""

    tps_regularise = "all"  # the official TPS system (engines/tpsmm/geometry.py TPS_REGULARISE); set per config
    tps_affine = None  # engines/tpsmm/geometry.py AffineGroups: groups solved as an affine map; set per config

    def __init__(self, block_expansion: int, num_blocks: int, max_features: int, num_tps: int,
                 num_channels: int, scale_factor: float = 0.25, bg: bool = False, multi_mask: bool = True,
                 kp_variance: float = 0.01):
        super().__init__()
        if scale_factor != 1:
            self.down = AntiAliasInterpolation2d(num_channels, scale_factor)
        self.scale_factor = scale_factor
        self.multi_mask = multi_mask
        self.hourglass = Hourglass(block_expansion, num_channels * (num_tps + 1) + num_tps * 5 + 1,
                                   num_blocks=num_blocks, max_features=max_features)
        out_ch = self.hourglass.out_channels
        self.maps = nn.Conv2d(out_ch[-1], num_tps + 1, kernel_size=(7, 7), padding=(3, 3))
        if multi_mask:
            self.up_nums = int(math.log(1 / scale_factor, 2))
            self.occlusion_num = 4
            channel = [out_ch[-1] // (2**i) for i in range(self.up_nums)]
            self.up = nn.ModuleList([UpBlock2d(c, c // 2, kernel_size=3, padding=1) for c in channel])
            channel = [out_ch[-i - 1] for i in range(self.occlusion_num - self.up_nums)[::-1]]
            channel += [out_ch[-1] // (2 ** (i + 1)) for i in range(self.up_nums)]
            self.occlusion = nn.ModuleList([nn.Conv2d(c, 1, kernel_size=(7, 7), padding=(3, 3)) for c in channel])
        else:
            self.occlusion = nn.ModuleList([nn.Conv2d(out_ch[-1], 1, kernel_size=(7, 7), padding=(3, 3))])
        self.num_tps = num_tps
        self.bg = bg
        self.kp_variance = kp_variance

    def downsample(self, source: torch.Tensor) -> torch.Tensor:
        """The anti-aliased source the motion is estimated at: (N,3,S,S) → (N,3,s,s)."""
        return self.down(source) if self.scale_factor != 1 else source

    def transformations(self, tps: TPSParams, height: int, width: int, bg_param: torch.Tensor | None) -> torch.Tensor:
        """Identity (or background-affine) grid followed by the T TPS grids: (N,T+1,h,w,2)."""
        n = tps.theta.shape[0]
        identity = make_coordinate_grid(height, width, dtype=tps.theta.dtype, device=tps.theta.device)
        identity = identity.view(1, 1, height, width, 2).repeat(n, 1, 1, 1, 1)
        if bg_param is not None:
            identity = apply_affine_to_grid(identity, bg_param.to(identity.dtype))
        return torch.cat([identity, tps_warp_grid(tps, height, width)], dim=1)

    def motion(self, source_small: torch.Tensor, heat_source: torch.Tensor, kp_driving: torch.Tensor,
               transformations: torch.Tensor, dropout_p: float | None = None, keep_all: bool = True) -> DenseMotion:
        """The network proper, from precomputed pieces (what the generator engine runs per frame).

        source_small (N,3,s,s); heat_source (N,K,s,s) source Gaussians; kp_driving (N,K,2);
        transformations (N,T+1,s,s,2). ``dropout_p`` switches on the training-time TPS dropout.
        """
        n, c, h, w = source_small.shape
        t1 = self.num_tps + 1
        heat_driving = kp2gaussian(kp_driving, h, w, self.kp_variance)
        heatmap = heat_driving - heat_source
        heatmap = torch.cat([torch.zeros_like(heatmap[:, :1]), heatmap], dim=1)

        src_rep = source_small.unsqueeze(1).repeat(1, t1, 1, 1, 1).view(n * t1, c, h, w)
        deformed = F.grid_sample(src_rep, transformations.reshape(n * t1, h, w, 2).to(src_rep.dtype),
                                 align_corners=True).view(n, t1, c, h, w)
        inp = torch.cat([heatmap.to(deformed.dtype), deformed.view(n, t1 * c, h, w)], dim=1)

        prediction = self.hourglass(inp)
        logits = self.maps(prediction[-1])
        if dropout_p is not None:
            contribution = self.dropout_softmax(logits, dropout_p)
        else:
            contribution = F.softmax(logits, dim=1)
        # Eq. (6): the K+1 transformations weighted by the contribution maps
        deformation = (transformations.permute(0, 1, 4, 2, 3) * contribution.unsqueeze(2).to(transformations.dtype)).sum(dim=1)
        deformation = deformation.permute(0, 2, 3, 1)

        occlusion = []
        if self.multi_mask:
            for i in range(self.occlusion_num - self.up_nums):
                occlusion.append(torch.sigmoid(self.occlusion[i](prediction[self.up_nums - self.occlusion_num + i])))
            feat = prediction[-1]
            for i in range(self.up_nums):
                feat = self.up[i](feat)
                occlusion.append(torch.sigmoid(self.occlusion[i + self.occlusion_num - self.up_nums](feat)))
        else:
            occlusion.append(torch.sigmoid(self.occlusion[0](prediction[-1])))
        return DenseMotion(deformation, occlusion, contribution,
                           deformed if keep_all else None, transformations if keep_all else None)

    dropout_softmax = staticmethod(dropout_softmax)

    def forward(self, source: torch.Tensor, kp_driving: torch.Tensor, kp_source: torch.Tensor,
                bg_param: torch.Tensor | None = None, dropout_p: float | None = None) -> DenseMotion:
        """The official forward: source (N,3,S,S), kp_driving / kp_source (N,K,2), bg_param (N,3,3)."""
        small = self.downsample(source)
        h, w = small.shape[2:]
        heat_source = kp2gaussian(kp_source, h, w, self.kp_variance)
        tps = solve_tps(kp_driving, kp_source, self.num_tps, self.tps_regularise, self.tps_affine)
        trans = self.transformations(tps, h, w, bg_param)
        return self.motion(small, heat_source, kp_driving, trans, dropout_p)


class InpaintingNetwork(nn.Module):
    """Encoder of the source, warped and occluded per level, decoded into the driving frame.

    The encoder depends only on the source, so live inference runs :meth:`encode` once per avatar
    and :meth:`decode` per frame.
    """

    def __init__(self, num_channels: int, block_expansion: int, max_features: int, num_down_blocks: int,
                 multi_mask: bool = True, **_):
        super().__init__()
        self.num_down_blocks = num_down_blocks
        self.multi_mask = multi_mask
        self.first = SameBlock2d(num_channels, block_expansion, kernel_size=(7, 7), padding=(3, 3))
        down, up, res = [], [], []
        for i in range(num_down_blocks):
            cin = min(max_features, block_expansion * (2**i))
            cout = min(max_features, block_expansion * (2 ** (i + 1)))
            down.append(DownBlock2d(cin, cout, kernel_size=(3, 3), padding=(1, 1)))
            dec_in = cout if i == num_down_blocks - 1 else cout * 2
            up.append(UpBlock2d(dec_in, cin, kernel_size=(3, 3), padding=(1, 1)))
            res.append(ResBlock2d(dec_in, kernel_size=(3, 3), padding=(1, 1)))
            res.append(ResBlock2d(dec_in, kernel_size=(3, 3), padding=(1, 1)))
        self.down_blocks = nn.ModuleList(down)
        self.up_blocks = nn.ModuleList(up[::-1])
        self.resblock = nn.ModuleList(res[::-1])
        self.final = nn.Conv2d(block_expansion, num_channels, kernel_size=(7, 7), padding=(3, 3))
        self.num_channels = num_channels

    @staticmethod
    def deform_input(inp: torch.Tensor, deformation: torch.Tensor) -> torch.Tensor:
        """Warp (N,C,H,W) by a grid (N,h,w,2), resizing the grid bilinearly to H×W when needed."""
        return deform(inp, deformation, align_corners=True)

    def occlude_input(self, inp: torch.Tensor, occlusion: torch.Tensor) -> torch.Tensor:
        if not self.multi_mask and inp.shape[2:] != occlusion.shape[2:]:
            occlusion = F.interpolate(occlusion, size=inp.shape[2:], mode="bilinear", align_corners=True)
        return inp * occlusion.to(inp.dtype)

    def encode(self, source: torch.Tensor) -> list[torch.Tensor]:
        """Source features per level: [(N,be,S,S), (N,2be,S/2,S/2), …] (num_down_blocks + 1 maps)."""
        out = self.first(source)
        maps = [out]
        for block in self.down_blocks:
            out = block(out)
            maps.append(out)
        return maps

    def decode(self, encoder_maps: list[torch.Tensor], source: torch.Tensor, deformation: torch.Tensor,
               occlusion_maps: list[torch.Tensor], keep_warped: bool = False) -> Inpainting:
        """Warp, occlude and decode the cached source features for one driving motion."""
        out = self.occlude_input(self.deform_input(encoder_maps[-1], deformation), occlusion_maps[0])
        warped = [out.detach()] if keep_warped else []
        encode_i = out
        for i in range(self.num_down_blocks):
            out = self.resblock[2 * i + 1](self.resblock[2 * i](out))
            out = self.up_blocks[i](out)
            occ = occlusion_maps[i + 1 if self.multi_mask else 0]
            encode_i = self.occlude_input(self.deform_input(encoder_maps[-(i + 2)], deformation), occ)
            if keep_warped:
                warped.append(encode_i.detach())
            if i == self.num_down_blocks - 1:
                break
            out = torch.cat([out, encode_i], 1)
        deformed_source = self.deform_input(source, deformation)
        occ_last = occlusion_maps[-1]
        if not self.multi_mask:
            occ_last = F.interpolate(occ_last, size=out.shape[2:], mode="bilinear", align_corners=True)
        occ_last = occ_last.to(out.dtype)
        out = out * (1 - occ_last) + encode_i
        out = torch.sigmoid(self.final(out))
        out = out * (1 - occ_last) + deformed_source.to(out.dtype) * occ_last
        return Inpainting(out, deformed_source, warped)

    def encode_driving(self, driving: torch.Tensor, occlusion_maps: list[torch.Tensor]) -> list[torch.Tensor]:
        """Official ``get_encode``: the driving frame's occluded encoder maps, fine first (warp loss)."""
        out = self.first(driving)
        maps = [self.occlude_input(out.detach(), occlusion_maps[-1].detach())]
        for i, block in enumerate(self.down_blocks):
            out = block(out.detach())
            maps.append(self.occlude_input(out.detach(), occlusion_maps[len(self.down_blocks) - 1 - i].detach()).detach())
        return maps

    def decode_motion(self, encoder_maps: list[torch.Tensor], source: torch.Tensor, motion: DenseMotion,
                      keep_warped: bool = False) -> Inpainting:
        """The generators' common per-frame call (:meth:`decode` with the dense motion's grid and occlusions)."""
        return self.decode(encoder_maps, source, motion.deformation, motion.occlusion_maps, keep_warped)

    def forward(self, source: torch.Tensor, motion: DenseMotion, keep_warped: bool = False) -> Inpainting:
        return self.decode(self.encode(source), source, motion.deformation, motion.occlusion_maps, keep_warped)


def _mlp(sizes: list[int], inplace: bool) -> nn.Sequential:
    layers: list[nn.Module] = []
    for i in range(len(sizes) - 1):
        layers.append(nn.Linear(sizes[i], sizes[i + 1]))
        if i < len(sizes) - 2:
            layers += [nn.BatchNorm1d(sizes[i + 1]), nn.ReLU(inplace=inplace)]
    return nn.Sequential(*layers)


class AVDNetwork(nn.Module):
    """Animation via disentanglement: (kp_source, kp_driving) (N,K,2) → keypoints with the
    source's identity (shape) and the driving pose, (N,K,2)."""

    def __init__(self, num_tps: int, id_bottle_size: int = 64, pose_bottle_size: int = 64):
        super().__init__()
        size = 5 * 2 * num_tps
        self.num_tps = num_tps
        self.id_encoder = _mlp([size, 256, 512, 1024, id_bottle_size], inplace=True)
        self.pose_encoder = _mlp([size, 256, 512, 1024, pose_bottle_size], inplace=True)
        self.decoder = _mlp([pose_bottle_size + id_bottle_size, 1024, 512, 256, size], inplace=False)

    def forward(self, kp_source: torch.Tensor, kp_driving: torch.Tensor) -> torch.Tensor:
        n = kp_driving.shape[0]
        if kp_source.shape[0] != n:
            kp_source = kp_source.expand(n, -1, -1)
        pose = self.pose_encoder(kp_driving.reshape(n, -1))
        ident = self.id_encoder(kp_source.reshape(n, -1))
        return self.decoder(torch.cat([pose, ident], dim=1)).view(n, self.num_tps * 5, 2)


class TPSMM(nn.Module):
    """The five networks of one model, under the official checkpoint names.

    ``bg_predictor`` is None for configs without background motion (mgif).
    """

    MODULES = ("kp_detector", "bg_predictor", "dense_motion_network", "inpainting_network", "avd_network")

    def __init__(self, config: ModelConfig):
        super().__init__()
        self.config = config
        kp = config.keypoint
        # landmark configs have no keypoint network: their keypoints are face-mesh landmarks
        self.kp_detector = (None if config.landmark_keypoints else
                            KPDetector(config.num_tps, config.num_channels, kp.width, kp.depth, kp.head))
        self.bg_predictor = BGMotionPredictor(config.num_channels, kp.width, kp.depth) if config.bg else None
        dm = config.dense_motion
        g = config.generator
        if dm.kind == "light":
            from splinecam.engines.tpsmm.light import LightDenseMotion

            self.dense_motion_network = LightDenseMotion(config.num_tps, config.num_channels, dm.block_expansion,
                                                         dm.max_features, dm.num_blocks, dm.scale_factor)
            self.dense_motion_network.tps_regularise = dm.tps_regularise
            self.dense_motion_network.tps_affine = AffineGroups(dm.affine_tps, dm.affine_fit)
        elif dm.kind == "none":  # keypoint masks, no motion field (engines/tpsmm/kpmask.py)
            from splinecam.engines.tpsmm.kpmask import KeypointMasks

            self.dense_motion_network = KeypointMasks(config.num_tps, config.num_channels, dm.scale_factor)
        else:
            self.dense_motion_network = DenseMotionNetwork(
                dm.block_expansion, dm.num_blocks, dm.max_features, config.num_tps, config.num_channels,
                dm.scale_factor, config.bg, config.multi_mask)
            self.dense_motion_network.tps_regularise = dm.tps_regularise
            self.dense_motion_network.tps_affine = AffineGroups(dm.affine_tps, dm.affine_fit)
        if g.kind == "warp-refine":
            from splinecam.engines.tpsmm.light import WarpRefineGenerator

            self.inpainting_network = WarpRefineGenerator(config.num_channels, g.block_expansion, g.max_features,
                                                          g.num_down_blocks)
        elif g.kind == "keypoint-mask":
            from splinecam.engines.tpsmm.kpmask import KeypointMaskGenerator

            self.inpainting_network = KeypointMaskGenerator(config.num_tps, config.num_channels, g.block_expansion,
                                                            g.max_features, g.num_down_blocks)
        else:
            self.inpainting_network = InpaintingNetwork(config.num_channels, g.block_expansion, g.max_features,
                                                        g.num_down_blocks, config.multi_mask)
        self.avd_network = AVDNetwork(config.num_tps, config.avd.id_bottle_size, config.avd.pose_bottle_size)

    def submodules(self) -> dict[str, nn.Module]:
        """The present networks by official name."""
        return {name: getattr(self, name) for name in self.MODULES if getattr(self, name) is not None}

    def animate(self, source: torch.Tensor, kp_source: torch.Tensor, kp_driving: torch.Tensor,
                bg_param: torch.Tensor | None = None) -> torch.Tensor:
        """Uncached reference path: (N,3,S,S) source, normalised driving keypoints (N,K,2) → (N,3,S,S)."""
        motion = self.dense_motion_network(source, kp_driving, kp_source, bg_param)
        return self.inpainting_network(source, motion).prediction
