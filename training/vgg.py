"""VGG19 feature extractor for the perceptual loss (implemented here; torchvision is not needed).

Sources of weights, in order (:func:`build_perceptual_net`):

1. ``--vgg-weights PATH``: a torchvision VGG19 state dict (``features.N.weight`` …) or our own slice
   names; read with ``torch.load(weights_only=True)``;
2. torchvision's hub cache: ``$TORCH_HOME/hub/checkpoints/vgg19-dcbb9e9d.pth`` (TORCH_HOME defaults
   to ``~/.cache/torch``);
3. otherwise a fallback that needs no download: a VGG19-shaped network with random but fixed weights
   (seeded, He-normal, so activations keep their scale through depth), at ``width`` × the VGG19
   channel counts. Random conv features are a reasonable multi-scale texture / structure descriptor;
   together with the image-pyramid L1 term of the loss they give a usable reconstruction loss.

Which one was used is ``PerceptualNet.kind`` (written to the log and the checkpoint metadata).
"""

from __future__ import annotations

import os
from pathlib import Path

import torch
from torch import nn

from splinecam.engines.errors import CheckpointError

# VGG19 "features": channel counts of the 16 convs, "M" = 2×2 max pool
VGG19_LAYOUT = [64, 64, "M", 128, 128, "M", 256, 256, 256, 256, "M", 512, 512, 512, 512, "M", 512, 512, 512, 512]
# indices (in torchvision's features Sequential) of the last layer of each slice: relu1_1 … relu5_1
SLICE_ENDS = (1, 6, 11, 20, 29)
TORCHVISION_FILE = "vgg19-dcbb9e9d.pth"
IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)


class VGG19Features(nn.Module):
    """VGG19 up to relu5_1, returning the 5 relu{1..5}_1 maps.

    Input (N,3,H,W) in [0,1] (normalised with the ImageNet mean/std inside). Outputs, for H=W=256:
    (N,64w,256,256), (N,128w,128,128), (N,256w,64,64), (N,512w,32,32), (N,512w,16,16) with w = width.
    Parameters are frozen (requires_grad False); gradients flow to the input only.
    """

    def __init__(self, width: float = 1.0):
        super().__init__()
        layers: list[nn.Module] = []
        cin = 3
        for v in VGG19_LAYOUT:
            if v == "M":
                layers.append(nn.MaxPool2d(2, 2))
            else:
                cout = max(4, int(round(v * width)))
                layers += [nn.Conv2d(cin, cout, 3, padding=1), nn.ReLU(inplace=False)]
                cin = cout
        self.features = nn.Sequential(*layers[: SLICE_ENDS[-1] + 1])
        self.register_buffer("mean", torch.tensor(IMAGENET_MEAN).view(1, 3, 1, 1))
        self.register_buffer("std", torch.tensor(IMAGENET_STD).view(1, 3, 1, 1))
        self.width = width

    def forward(self, x: torch.Tensor) -> list[torch.Tensor]:
        x = (x - self.mean.to(x.dtype)) / self.std.to(x.dtype)
        outs = []
        start = 0
        for end in SLICE_ENDS:
            for i in range(start, end + 1):
                x = self.features[i](x)
            outs.append(x)
            start = end + 1
        return outs

    def freeze(self) -> "VGG19Features":
        for p in self.parameters():
            p.requires_grad_(False)
        return self.eval()


def _random_init(net: VGG19Features, seed: int = 1234) -> None:
    g = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for m in net.features:
            if isinstance(m, nn.Conv2d):
                fan_in = m.in_channels * 9
                m.weight.copy_(torch.randn(m.weight.shape, generator=g) * (2.0 / fan_in) ** 0.5)
                m.bias.zero_()


def torchvision_cache_path() -> Path:
    home = os.environ.get("TORCH_HOME") or os.path.join(os.environ.get("XDG_CACHE_HOME", os.path.expanduser("~/.cache")), "torch")
    return Path(home) / "hub" / "checkpoints" / TORCHVISION_FILE


def load_imagenet_weights(net: VGG19Features, path: Path) -> None:
    """Load a torchvision VGG19 state dict (``features.*`` keys; classifier keys ignored)."""
    try:
        sd = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as exc:  # noqa: BLE001 - any unreadable file is a user error here
        raise CheckpointError(f"--vgg-weights {path} is not a readable VGG19 state dict ({str(exc)[:120]})") from None
    if isinstance(sd, dict) and "state_dict" in sd:
        sd = sd["state_dict"]
    own = net.features.state_dict()
    wanted = {f"features.{k}": k for k in own}
    missing = [k for k in wanted if k not in sd]
    if missing:
        raise CheckpointError(f"{path} is not a torchvision VGG19 state dict (no {missing[0]!r})")
    net.features.load_state_dict({own_k: sd[k].float() for k, own_k in wanted.items()}, strict=True)


class PerceptualNet(nn.Module):
    """A frozen VGG19-shaped feature net and a label of where its weights came from (``kind``)."""

    def __init__(self, net: VGG19Features, kind: str):
        super().__init__()
        self.net = net.freeze()
        self.kind = kind

    def forward(self, x: torch.Tensor) -> list[torch.Tensor]:
        return self.net(x)


def build_perceptual_net(weights: str | Path | None = None, fallback_width: float = 0.25,
                         seed: int = 1234) -> PerceptualNet:
    """ImageNet VGG19 from ``weights`` or torchvision's cache; else the random fixed fallback.

    ``fallback_width`` scales the fallback's channels (1.0 = full VGG19 shape; 0.25 = 1/16 the FLOPs).
    """
    if weights:
        path = Path(weights).expanduser()
        if not path.is_file():
            raise CheckpointError(f"--vgg-weights {path} does not exist (give torchvision's vgg19-dcbb9e9d.pth)")
        net = VGG19Features(1.0)
        load_imagenet_weights(net, path)
        return PerceptualNet(net, f"imagenet-vgg19 ({path.name})")
    cached = torchvision_cache_path()
    if cached.is_file():
        net = VGG19Features(1.0)
        load_imagenet_weights(net, cached)
        return PerceptualNet(net, f"imagenet-vgg19 (torchvision cache {cached})")
    net = VGG19Features(fallback_width)
    _random_init(net, seed)
    return PerceptualNet(net, f"random-fixed-vgg19 (width {fallback_width:g}, seed {seed}; no ImageNet weights found)")
