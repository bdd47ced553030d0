"""The keypoint-mask model (``kpmask-256``): the frame synthesised from keypoint heatmaps, no motion field.

After the idea of Toledano, Marmor & Gertz, "Image Animation with Keypoint Mask" (a draft, in the shared
``papers/004_*``; its idea is taken, not its details): structure is drawn from keypoint heatmaps — a
*mask* of the source's keypoints and one of the driving keypoints — and a generator that sees the
source image and the two masks synthesises the frame. There is no explicit motion representation: no
TPS warp, no dense optical flow, no ``grid_sample`` anywhere; whatever moves is moved by convolutions.

The same package interfaces as TPSMM's dense motion and inpainting networks (``dense_motion_network`` /
``inpainting_network``), so the frame generator, the exported graphs, every backend, the trainer and
``evaluate`` run it through their usual paths:

* :class:`KeypointMasks` — ``dense_motion_params.kind: none``. No network: from the (cached) source
  keypoint Gaussians and the driving keypoints it draws the structure masks, one channel per keypoint
  group (the T groups of 5 of the landmark configs: lips, eyes, brows, nose, jaw, chin, forehead), each
  the sum of its keypoints' Gaussians (variance 0.01, as TPSMM's heatmaps). The draft sums all K
  heatmaps into one mask; per-group masks keep which part of the face is where (its "future work").
* :class:`KeypointMaskGenerator` — ``generator_params.kind: keypoint-mask``. A source encoder (cached
  per avatar: L maps at S/2 … S/2^L) and a per-frame decoder that starts at the coarsest map with the
  two masks concatenated, runs residual blocks there (where moving the face is a short reach), and goes
  up through the finer levels, each concatenating the (unwarped) source features and the masks at its
  size. A 3×3 head at S/2 gives a synthesised RGB frame and a blend mask b, upsampled to S:
  ``prediction = b · source + (1 − b) · synth`` — b keeps the source's own pixels where the masks say
  nothing moved (a still face comes back sharp); where it moved, the frame is generated.

The driving frame reaches the generator only through its keypoints (the backends' rule: no driver
pixel reaches the output; tests/test_kpmask.py checks it).

Shapes: N batch, S image size, s = S · scale_factor (the mask size the source Gaussians are cached at,
64 for S = 256), T keypoint groups (``num_tps``), K = 5T keypoints, L = ``num_down_blocks`` levels,
c_i = min(max_features, block_expansion · 2^i) channels at level i (size S/2^(i+1)).
"""

from __future__ import annotations

from dataclasses import dataclass, field

import torch
import torch.nn.functional as F
from torch import nn

from splinecam.engines.errors import SplinecamError
from splinecam.engines.tpsmm.geometry import TPSParams, kp2gaussian
from splinecam.engines.tpsmm.layers import SeparableAntiAlias
from splinecam.engines.tpsmm.light import conv_bn, upsample2
from splinecam.engines.tpsmm.motion import Inpainting

#: residual blocks at the coarsest level of the decoder (S/2^L)
BOTTLENECK_BLOCKS = 2


@dataclass
class KeypointMaskMaps:
    """What :class:`KeypointMasks` gives the generator in place of a dense motion.

    source: (N,T,s,s) float32, per group the sum of the source keypoints' Gaussians; driving: the same
    for the driving keypoints. ``deformation`` is None and ``occlusion_maps`` empty: nothing is warped,
    so nothing is occluded (the fields exist so code that reads a dense motion finds them).
    """

    source: torch.Tensor
    driving: torch.Tensor
    deformation: None = None
    occlusion_maps: list = field(default_factory=list)

    @property
    def masks(self) -> torch.Tensor:
        """(N,2T,s,s) float32: source masks then driving masks (the generator's structure input)."""
        return torch.cat([self.source, self.driving], dim=1)

    @property
    def preview(self) -> torch.Tensor:
        """(N,1,s,s) in [0,1]: the driving masks in one picture, their maximum (training visualisation)."""
        return self.driving.amax(1, keepdim=True).clamp(0, 1)


def group_masks(kp: torch.Tensor, groups: int, height: int, width: int, variance: float) -> torch.Tensor:
    """Σ over each group of keypoints of exp(−½|p − kp|²/variance): kp (N,K,2) → (N,groups,H,W), float32.

    :func:`~splinecam.engines.tpsmm.geometry.kp2gaussian` summed per group, computed separably (two (N,K,·)
    exponentials and a batched matrix product), on the pixel-centre coordinates of
    :func:`~splinecam.engines.tpsmm.geometry.make_coordinate_grid`. The coordinates come from ``arange``, not
    ``linspace``: torch's ONNX exporter writes a linspace as a float64 constant and computes with it in
    float64 (TensorRT has no float64); every tensor of this one is float32 in the exported graph too.
    """
    n, k, _ = kp.shape
    kp = kp.float()
    xs = 2 * (torch.arange(width, dtype=torch.float32, device=kp.device) / (width - 1)) - 1
    ys = 2 * (torch.arange(height, dtype=torch.float32, device=kp.device) / (height - 1)) - 1
    gx = torch.exp(-0.5 * (xs.view(1, 1, -1) - kp[..., :1]) ** 2 / variance)       # (N,K,W)
    gy = torch.exp(-0.5 * (ys.view(1, 1, -1) - kp[..., 1:]) ** 2 / variance)       # (N,K,H)
    p = k // groups
    gy = gy.view(n * groups, p, height).transpose(1, 2)                             # (N·G,H,P)
    return torch.bmm(gy, gx.view(n * groups, p, width)).view(n, groups, height, width)


class KeypointMasks(nn.Module):
    """``dense_motion_params.kind: none``: structure masks from keypoints, no motion estimated.

    Keeps the dense motion interface the frame generator and the trainer call: ``downsample`` (the
    anti-aliased (N,3,s,s) source, cached as ``source_small``), ``kp_variance`` (the cached source
    Gaussians (N,K,s,s) are drawn with it), ``transformations`` (None: no TPS), ``motion`` →
    :class:`KeypointMaskMaps`. Its only state is the anti-aliasing kernel (a buffer, no parameters).
    """

    def __init__(self, num_tps: int, num_channels: int = 3, scale_factor: float = 0.25, kp_variance: float = 0.01):
        super().__init__()
        self.num_tps = num_tps
        self.scale_factor = scale_factor
        self.kp_variance = kp_variance
        self.down = SeparableAntiAlias(num_channels, scale_factor)

    def downsample(self, source: torch.Tensor) -> torch.Tensor:
        """(N,3,S,S) → (N,3,s,s) anti-aliased source (cached per avatar; the generator does not need it)."""
        return self.down(source)

    def transformations(self, tps: TPSParams, height: int, width: int, bg_param: torch.Tensor | None) -> None:
        """No motion field: nothing to transform (the TPS the host solves is unused)."""
        return None

    def motion(self, source_small: torch.Tensor, heat_source: torch.Tensor, kp_driving: torch.Tensor,
               transformations: None = None, dropout_p: float | None = None, keep_all: bool = True) -> KeypointMaskMaps:
        """heat_source (N,K,s,s) source Gaussians, kp_driving (N,K,2) → masks (N,T,s,s) each. float32.

        ``source_small``, ``transformations``, ``dropout_p`` and ``keep_all`` are the dense motion
        interface's and unused (there are no TPS contributions to drop)."""
        n, k, h, w = heat_source.shape
        source = heat_source.float().view(n, self.num_tps, k // self.num_tps, h, w).sum(2)
        driving = group_masks(kp_driving, self.num_tps, h, w, self.kp_variance)
        return KeypointMaskMaps(source, driving)

    def forward(self, source: torch.Tensor, kp_driving: torch.Tensor, kp_source: torch.Tensor,
                bg_param: torch.Tensor | None = None, dropout_p: float | None = None) -> KeypointMaskMaps:
        """Uncached: source (N,3,S,S), kp_driving / kp_source (N,K,2) → :class:`KeypointMaskMaps`."""
        h = w = int(round(source.shape[-1] * self.scale_factor))
        return self.motion(None, kp2gaussian(kp_source.float(), h, w, self.kp_variance), kp_driving)


def resize_mask(mask: torch.Tensor, size: int) -> torch.Tensor:
    """Masks (N,C,s,s) at size×size: average pooling down (s/size an integer), bilinear up."""
    s = mask.shape[-1]
    if size == s:
        return mask
    if size < s:
        return F.avg_pool2d(mask, s // size)
    return F.interpolate(mask, size=(size, size), mode="bilinear", align_corners=False)


class ResBlock(nn.Module):
    """(N,c,h,w) → (N,c,h,w): relu(x + BN(conv3×3(relu(BN(conv3×3(x)))))) — BatchNorms fold into the convs."""

    def __init__(self, channels: int):
        super().__init__()
        self.body = nn.Sequential(conv_bn(channels, channels), nn.Conv2d(channels, channels, 3, padding=1, bias=False),
                                  nn.BatchNorm2d(channels))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return F.relu(x + self.body(x))


class KeypointMaskGenerator(nn.Module):
    """``generator_params.kind: keypoint-mask``; the interface of the inpainting networks (``encode``,
    ``decode_motion``, ``forward(source, motion)``), see the module docstring.

    ``encode(source (N,3,S,S))`` → L maps [(N,c_0,S/2,S/2), …, (N,c_{L-1},S/2^L,S/2^L)] (cached per avatar);
    ``decode(maps, source, masks (N,2T,s,s))`` → Inpainting with prediction (N,3,S,S) in [0,1].
    """

    def __init__(self, num_tps: int, num_channels: int = 3, block_expansion: int = 16, max_features: int = 128,
                 num_down_blocks: int = 4, **_):
        super().__init__()
        levels = num_down_blocks
        c = [min(max_features, block_expansion * 2**i) for i in range(levels)]
        m = 2 * num_tps
        self.channels = c
        self.num_down_blocks = levels
        self.num_channels = num_channels
        enc = [nn.Sequential(nn.Conv2d(num_channels, c[0], 3, stride=2, padding=1, bias=False), nn.BatchNorm2d(c[0]),
                             nn.ReLU(inplace=True), conv_bn(c[0], c[0]))]
        enc += [nn.Sequential(nn.AvgPool2d(2), conv_bn(c[i - 1], c[i])) for i in range(1, levels)]
        self.encoder = nn.ModuleList(enc)
        self.bottleneck = nn.Sequential(conv_bn(c[-1] + m, c[-1]), *[ResBlock(c[-1]) for _ in range(BOTTLENECK_BLOCKS)])
        # decoder, coarse to fine: level i takes the upsampled level i+1, the source map i and the masks
        self.up = nn.ModuleList([conv_bn(c[i + 1] + c[i] + m, c[i]) for i in reversed(range(levels - 1))])
        self.head = nn.Conv2d(c[0], num_channels + 1, 3, padding=1)

    def encode(self, source: torch.Tensor) -> list[torch.Tensor]:
        maps, out = [], source
        for block in self.encoder:
            out = block(out)
            maps.append(out)
        return maps

    def decode(self, encoder_maps: list[torch.Tensor], source: torch.Tensor, masks: torch.Tensor) -> Inpainting:
        """Cached source maps + masks (N,2T,s,s) float32 → Inpainting(prediction, source as ``deformed``)."""
        x = encoder_maps[-1]
        x = self.bottleneck(torch.cat([x, resize_mask(masks, x.shape[-1]).to(x.dtype)], dim=1))
        for block, f in zip(self.up, reversed(encoder_maps[:-1])):
            x = block(torch.cat([upsample2(x), f, resize_mask(masks, f.shape[-1]).to(f.dtype)], dim=1))
        head = F.interpolate(self.head(x), size=source.shape[2:], mode="bilinear", align_corners=False)
        synth = torch.sigmoid(head[:, : self.num_channels])
        blend = torch.sigmoid(head[:, self.num_channels:])
        prediction = blend * source.to(blend.dtype) + (1 - blend) * synth
        return Inpainting(prediction, source)

    def decode_motion(self, encoder_maps: list[torch.Tensor], source: torch.Tensor, motion: KeypointMaskMaps,
                      keep_warped: bool = False) -> Inpainting:
        """The generators' common per-frame call: here the masks of :class:`KeypointMasks` (nothing warped)."""
        return self.decode(encoder_maps, source, motion.masks)

    def encode_driving(self, driving: torch.Tensor, occlusion_maps: list[torch.Tensor]) -> list[torch.Tensor]:
        raise SplinecamError("the keypoint-mask generator warps nothing: the warp loss does not apply "
                             "(train with loss_weights.warp_loss: 0)")

    def forward(self, source: torch.Tensor, motion: KeypointMaskMaps, keep_warped: bool = False) -> Inpainting:
        return self.decode_motion(self.encode(source), source, motion)
