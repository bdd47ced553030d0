"""Building blocks of the official TPSMM networks, with the official parameter names.

Shapes use N = batch, C = channels, H×W = spatial size.

The conv blocks and the hourglass take ``norm``: the normalisation layer factory. TPSMM's is
:func:`instance_norm` (the default everywhere here); FOMM (:mod:`splinecam.engines.fomm`) builds the same
blocks with :func:`batch_norm`, as the official FOMM code does (its SynchronizedBatchNorm2d is a plain
BatchNorm2d in eval mode, with the same parameter and running-statistic names).
"""

from __future__ import annotations

from typing import Callable

import torch
import torch.nn.functional as F
from torch import nn

Norm = Callable[[int], nn.Module]


def instance_norm(features: int) -> nn.Module:
    """TPSMM's normalisation: affine instance norm (``norm.weight`` / ``norm.bias``)."""
    return nn.InstanceNorm2d(features, affine=True)


def batch_norm(features: int) -> nn.Module:
    """FOMM's normalisation: affine batch norm with running statistics."""
    return nn.BatchNorm2d(features, affine=True)


class ResBlock2d(nn.Module):
    """Pre-activation residual block (norm → relu → conv, twice), size preserving: (N,C,H,W)."""

    def __init__(self, in_features: int, kernel_size=3, padding=1, norm: Norm = instance_norm):
        super().__init__()
        self.conv1 = nn.Conv2d(in_features, in_features, kernel_size, padding=padding)
        self.conv2 = nn.Conv2d(in_features, in_features, kernel_size, padding=padding)
        self.norm1 = norm(in_features)
        self.norm2 = norm(in_features)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        out = self.conv1(F.relu(self.norm1(x)))
        out = self.conv2(F.relu(self.norm2(out)))
        return out + x


class UpBlock2d(nn.Module):
    """Nearest ×2 upsampling → conv → norm → relu: (N,Cin,H,W) → (N,Cout,2H,2W)."""

    def __init__(self, in_features: int, out_features: int, kernel_size=3, padding=1, groups=1,
                 norm: Norm = instance_norm):
        super().__init__()
        self.conv = nn.Conv2d(in_features, out_features, kernel_size, padding=padding, groups=groups)
        self.norm = norm(out_features)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        out = F.interpolate(x, scale_factor=2.0, mode="nearest")
        return F.relu(self.norm(self.conv(out)))


class DownBlock2d(nn.Module):
    """Conv → norm → relu → 2×2 average pool: (N,Cin,H,W) → (N,Cout,H/2,W/2)."""

    def __init__(self, in_features: int, out_features: int, kernel_size=3, padding=1, groups=1,
                 norm: Norm = instance_norm):
        super().__init__()
        self.conv = nn.Conv2d(in_features, out_features, kernel_size, padding=padding, groups=groups)
        self.norm = norm(out_features)
        self.pool = nn.AvgPool2d(kernel_size=(2, 2))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.pool(F.relu(self.norm(self.conv(x))))


class SameBlock2d(nn.Module):
    """Conv → norm → relu, size preserving: (N,Cin,H,W) → (N,Cout,H,W)."""

    def __init__(self, in_features: int, out_features: int, groups=1, kernel_size=3, padding=1,
                 norm: Norm = instance_norm):
        super().__init__()
        self.conv = nn.Conv2d(in_features, out_features, kernel_size, padding=padding, groups=groups)
        self.norm = norm(out_features)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return F.relu(self.norm(self.conv(x)))


class Encoder(nn.Module):
    """Hourglass encoder: returns [x, down1(x), down2(...), …] (num_blocks + 1 maps)."""

    def __init__(self, block_expansion: int, in_features: int, num_blocks=3, max_features=256,
                 norm: Norm = instance_norm):
        super().__init__()
        blocks = []
        for i in range(num_blocks):
            cin = in_features if i == 0 else min(max_features, block_expansion * (2**i))
            cout = min(max_features, block_expansion * (2 ** (i + 1)))
            blocks.append(DownBlock2d(cin, cout, kernel_size=3, padding=1, norm=norm))
        self.down_blocks = nn.ModuleList(blocks)

    def forward(self, x: torch.Tensor) -> list[torch.Tensor]:
        outs = [x]
        for block in self.down_blocks:
            outs.append(block(outs[-1]))
        return outs


class Decoder(nn.Module):
    """Hourglass decoder with skip concatenation; returns every level's output (coarse → fine).

    ``out_channels`` lists the channel count of each returned map; the last is
    ``block_expansion + in_features`` at full resolution.
    """

    def __init__(self, block_expansion: int, in_features: int, num_blocks=3, max_features=256,
                 norm: Norm = instance_norm):
        super().__init__()
        blocks = []
        self.out_channels: list[int] = []
        for i in range(num_blocks)[::-1]:
            cin = (1 if i == num_blocks - 1 else 2) * min(max_features, block_expansion * (2 ** (i + 1)))
            self.out_channels.append(cin)
            cout = min(max_features, block_expansion * (2**i))
            blocks.append(UpBlock2d(cin, cout, kernel_size=3, padding=1, norm=norm))
        self.up_blocks = nn.ModuleList(blocks)
        self.out_channels.append(block_expansion + in_features)

    def forward(self, skips: list[torch.Tensor]) -> list[torch.Tensor]:
        skips = list(skips)
        out = skips.pop()
        outs = []
        for block in self.up_blocks:
            out = torch.cat([block(out), skips.pop()], dim=1)
            outs.append(out)
        return outs


class Hourglass(nn.Module):
    """U-Net: (N,Cin,H,W) → list of decoder outputs, the last (N, block_expansion+Cin, H, W)."""

    def __init__(self, block_expansion: int, in_features: int, num_blocks=3, max_features=256,
                 norm: Norm = instance_norm):
        super().__init__()
        self.encoder = Encoder(block_expansion, in_features, num_blocks, max_features, norm)
        self.decoder = Decoder(block_expansion, in_features, num_blocks, max_features, norm)
        self.out_channels = self.decoder.out_channels

    def forward(self, x: torch.Tensor) -> list[torch.Tensor]:
        return self.decoder(self.encoder(x))


class AntiAliasInterpolation2d(nn.Module):
    """Gaussian blur (zero padding) then nearest subsampling by ``scale`` (official quirks kept).

    (N,C,H,W) → (N,C,H·scale,W·scale). The blur kernel is the ``weight`` buffer, part of the
    official state dict.
    """

    def __init__(self, channels: int, scale: float):
        super().__init__()
        sigma = (1 / scale - 1) / 2
        kernel_size = 2 * round(sigma * 4) + 1
        self.ka = kernel_size // 2
        self.kb = self.ka - 1 if kernel_size % 2 == 0 else self.ka
        ax = torch.arange(kernel_size, dtype=torch.float32)
        mean = (kernel_size - 1) / 2
        g = torch.exp(-((ax - mean) ** 2) / (2 * sigma**2))
        kernel = g[:, None] * g[None, :]
        kernel = kernel / kernel.sum()
        self.register_buffer("weight", kernel.view(1, 1, kernel_size, kernel_size).repeat(channels, 1, 1, 1))
        self.groups = channels
        self.scale = scale
        self.step = int(round(1 / scale))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if self.scale == 1.0:
            return x
        out = F.pad(x, (self.ka, self.kb, self.ka, self.kb))
        out = F.conv2d(out, weight=self.weight.to(x.dtype), groups=self.groups)
        return out[:, :, :: self.step, :: self.step]


class SeparableAntiAlias(AntiAliasInterpolation2d):
    """:class:`AntiAliasInterpolation2d`'s result computed fast: the Gaussian is separable and only every
    ``step``-th output is kept, so two strided 1-D convolutions replace one full-resolution k×k one (e.g.
    2·29 instead of 29² taps at 1/64 of the positions for scale ⅛). Same buffer and state dict; equal up to
    float rounding. Used by our own configs and the training loss pyramid — the official modules keep
    the official layer."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if self.scale == 1.0:
            return x
        c = x.shape[1]
        k1 = self.weight[0, 0].sum(dim=1).to(x.dtype)  # the 2-D kernel is the outer product of this with itself
        out = F.pad(x, (self.ka, self.kb, self.ka, self.kb))
        out = F.conv2d(out, k1.view(1, 1, -1, 1).expand(c, 1, -1, 1), stride=(self.step, 1), groups=c)
        return F.conv2d(out, k1.view(1, 1, 1, -1).expand(c, 1, 1, -1), stride=(1, self.step), groups=c)


class BasicBlock(nn.Module):
    """torchvision's ResNet BasicBlock, same parameter names."""

    def __init__(self, cin: int, cout: int, stride: int = 1):
        super().__init__()
        self.conv1 = nn.Conv2d(cin, cout, 3, stride=stride, padding=1, bias=False)
        self.bn1 = nn.BatchNorm2d(cout)
        self.conv2 = nn.Conv2d(cout, cout, 3, stride=1, padding=1, bias=False)
        self.bn2 = nn.BatchNorm2d(cout)
        self.downsample = None
        if stride != 1 or cin != cout:
            self.downsample = nn.Sequential(nn.Conv2d(cin, cout, 1, stride=stride, bias=False), nn.BatchNorm2d(cout))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        out = F.relu(self.bn1(self.conv1(x)))
        out = self.bn2(self.conv2(out))
        identity = x if self.downsample is None else self.downsample(x)
        return F.relu(out + identity)


class ResNet18(nn.Module):
    """torchvision ``resnet18`` with the same parameter names (no torchvision dependency).

    (N, in_channels, H, W) → (N, num_outputs). ``width``/``depth`` default to ResNet18's 64 / 2;
    smaller values give the lighter backbones of our own configs.
    """

    def __init__(self, in_channels: int, num_outputs: int | None, width: int = 64, depth: int = 2):
        super().__init__()
        self.conv1 = nn.Conv2d(in_channels, width, kernel_size=7, stride=2, padding=3, bias=False)
        self.bn1 = nn.BatchNorm2d(width)
        self.maxpool = nn.MaxPool2d(kernel_size=3, stride=2, padding=1)
        cin = width
        for stage in range(4):
            cout = width * 2**stage
            blocks = [BasicBlock(cin, cout, stride=1 if stage == 0 else 2)]
            blocks += [BasicBlock(cout, cout) for _ in range(depth - 1)]
            setattr(self, f"layer{stage + 1}", nn.Sequential(*blocks))
            cin = cout
        # num_outputs None: a backbone only (``stages``), no classifier
        self.fc = nn.Linear(cin, num_outputs) if num_outputs is not None else None

    def stages(self, x: torch.Tensor) -> list[torch.Tensor]:
        """The four stage outputs: (N, width·2^i, H/2^(i+2), W/2^(i+2)) for i = 0…3."""
        x = self.maxpool(F.relu(self.bn1(self.conv1(x))))
        out = []
        for stage in (self.layer1, self.layer2, self.layer3, self.layer4):
            x = stage(x)
            out.append(x)
        return out

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self.stages(x)[-1]
        x = torch.flatten(F.adaptive_avg_pool2d(x, 1), 1)
        return self.fc(x)
