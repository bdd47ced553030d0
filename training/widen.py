"""``train --init`` from a narrower CPU dense-motion network: widened so that it computes the same function.

The cpu-256 dense motion (:class:`splinecam.engines.tpsmm.light.LightDenseMotion`: a BatchNorm U-Net
and two 3×3 heads) can be made wider — more channels per level, same levels — and started from a
trained narrower one instead of from scratch. Every trained weight is copied to the channels it fed and
came from; the new channels get their fresh initialisation for what they compute, and zero weight in
every layer that reads them, so the widened network's outputs equal the narrow one's exactly (until
training moves those zeros: their gradients are not zero, since the new channels carry activations).

The U-Net's decoder reads a concatenation ``[upsampled coarser level, skip]``: an input channel's
index moves when the coarser level widens, which is why a plain "copy into the leading slice" would be
wrong here (:func:`_concat_index`).
"""

from __future__ import annotations

import torch
from torch import nn

from splinecam.engines.tpsmm.light import LightDenseMotion


def can_widen(narrow: nn.Module, wide: nn.Module) -> bool:
    """Both are light dense-motion networks with the same levels, inputs and TPS count, ``wide`` at
    least as wide at every level and wider at one."""
    if not (isinstance(narrow, LightDenseMotion) and isinstance(wide, LightDenseMotion)):
        return False
    a, b = _chans(narrow), _chans(wide)
    return (len(a) == len(b) and narrow.num_tps == wide.num_tps and all(x <= y for x, y in zip(a, b)) and a != b
            and narrow.unet.first[0].in_channels == wide.unet.first[0].in_channels)


def _chans(m: LightDenseMotion) -> list[int]:
    return [m.unet.first[0].out_channels] + [blk[0].out_channels for blk in m.unet.down]


def _concat_index(groups_old: list[int], groups_new: list[int]) -> torch.Tensor:
    """Where each input channel of the old concatenation sits in the new one."""
    idx, start = [], 0
    for g_old, g_new in zip(groups_old, groups_new):
        idx.extend(range(start, start + g_old))
        start += g_new
    return torch.tensor(idx, dtype=torch.long)


@torch.no_grad()
def _copy_conv(old: nn.Conv2d, new: nn.Conv2d, in_old: list[int], in_new: list[int]) -> None:
    """old's weights into new's first ``old.out_channels`` outputs, at the inputs they read; those outputs
    read nothing from the new inputs (zero), the new outputs keep their fresh initialisation."""
    cols = _concat_index(in_old, in_new)
    o = old.out_channels
    new.weight[:o].zero_()
    new.weight[:o, cols] = old.weight
    if old.bias is not None:
        new.bias[:o] = old.bias


@torch.no_grad()
def _copy_bn(old: nn.BatchNorm2d, new: nn.BatchNorm2d) -> None:
    c = old.num_features
    for name in ("weight", "bias", "running_mean", "running_var"):
        getattr(new, name)[:c] = getattr(old, name)
    new.num_batches_tracked.copy_(old.num_batches_tracked)


def widen_dense_motion(narrow: LightDenseMotion, wide: LightDenseMotion) -> None:
    """Load ``narrow``'s trained weights into ``wide`` (freshly built, wider), in place; see the module
    docstring. Raises ValueError when :func:`can_widen` says no."""
    if not can_widen(narrow, wide):
        raise ValueError("not a narrower light dense motion network of the same levels")
    co, cn = _chans(narrow), _chans(wide)
    wide.down.load_state_dict(narrow.down.state_dict())
    first_in = narrow.unet.first[0].in_channels
    _copy_conv(narrow.unet.first[0], wide.unet.first[0], [first_in], [first_in])
    _copy_bn(narrow.unet.first[1], wide.unet.first[1])
    for i, (a, b) in enumerate(zip(narrow.unet.down, wide.unet.down)):
        _copy_conv(a[0], b[0], [co[i]], [cn[i]])
        _copy_bn(a[1], b[1])
    levels = len(co) - 1
    for a, b, i in zip(narrow.unet.up, wide.unet.up, reversed(range(levels))):
        _copy_conv(a[0], b[0], [co[i + 1], co[i]], [cn[i + 1], cn[i]])
        _copy_bn(a[1], b[1])
    for name in ("maps", "occlusion"):
        a, b = getattr(narrow, name), getattr(wide, name)
        with torch.no_grad():
            b.weight.zero_()
            b.weight[:, : co[0]] = a.weight
            b.bias.copy_(a.bias)
