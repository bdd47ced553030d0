"""FLOP count of one animated frame (keypoint detector + background + dense motion + inpainting).

Counted with ``torch.utils.flop_counter.FlopCounterMode`` (a multiply-add = 2 FLOPs; convolutions,
matmuls and linear layers; elementwise ops are not counted). One frame = what producing one output
frame from a source costs without caching: keypoints of source and driving, background motion (if
the config has it), dense motion, inpainting encoder + decoder.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
from torch.utils.flop_counter import FlopCounterMode

from engines.tpsmm.config import ModelConfig, load_config
from engines.tpsmm.networks import TPSMM


@dataclass
class FrameFlops:
    """GFLOPs per frame, by network, at ``image_size``."""

    config: str
    image_size: int
    kp_detector: float
    bg_predictor: float
    dense_motion: float
    inpainting: float

    @property
    def total(self) -> float:
        return self.kp_detector + self.bg_predictor + self.dense_motion + self.inpainting


def _count(fn) -> float:
    with FlopCounterMode(display=False) as counter:
        fn()
    return counter.get_total_flops() / 1e9


@torch.no_grad()
def frame_flops(config: ModelConfig | str, image_size: int | None = None) -> FrameFlops:
    """GFLOPs of one frame of ``config`` (a ModelConfig or a config name/path)."""
    cfg = load_config(config) if isinstance(config, str) else config
    size = image_size or cfg.image_size
    model = TPSMM(cfg).eval()
    src = torch.rand(1, 3, size, size)
    drv = torch.rand(1, 3, size, size)
    kp_flops = 2 * _count(lambda: model.kp_detector(src))
    kp_s, kp_d = model.kp_detector(src), model.kp_detector(drv)
    bg_flops = _count(lambda: model.bg_predictor(src, drv)) if model.bg_predictor is not None else 0.0
    bg = model.bg_predictor(src, drv) if model.bg_predictor is not None else None
    dm_flops = _count(lambda: model.dense_motion_network(src, kp_d, kp_s, bg))
    motion = model.dense_motion_network(src, kp_d, kp_s, bg)
    inp_flops = _count(lambda: model.inpainting_network(src, motion))
    return FrameFlops(cfg.name, size, kp_flops, bg_flops, dm_flops, inp_flops)
