"""FLOPs of the TPSMM networks per frame, counted with ``torch.utils.flop_counter.FlopCounterMode``.

A multiply-add is 2 FLOPs; convolutions, matmuls and linear layers are counted, elementwise ops,
``grid_sample`` and the host-side TPS solve are not. Counts are per network for one frame at the
config's image size, so each caller sums what its path runs:

- :attr:`NetworkFlops.official_frame`: the official demo's per-frame work — driving keypoints,
  dense motion and the whole inpainting network (encoder + decoder); source keypoints once, no bg;
- :attr:`NetworkFlops.cached_frame`: the cached generator path of the backends — driving keypoints,
  dense motion and the inpainting decoder (the encoder runs once per avatar);
- :attr:`NetworkFlops.training_frame`: a training step's forward — keypoints of source and driving,
  background motion, dense motion, inpainting.

Neutral on purpose (``engines`` imports neither ``training`` nor ``benchmarks``): the benchmarks and
the training package both count with it.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass

import torch
from torch.utils.flop_counter import FlopCounterMode

from splinecam.engines.tpsmm.config import ModelConfig, load_config
from splinecam.engines.tpsmm.networks import TPSMM


@dataclass(frozen=True)
class NetworkFlops:
    """GFLOPs of one call of each network for one frame (batch 1) at ``image_size``.

    kp_detector: one image (N=1, 3×S×S); bg_predictor: one (source, driving) pair (0 without bg);
    dense_motion: one driving motion (s×s, s = S·scale_factor); inpainting_encoder: the source
    encoder; inpainting_decoder: warp + occlude + decode of the cached encoder maps.
    """

    config: str
    image_size: int
    kp_detector: float
    bg_predictor: float
    dense_motion: float
    inpainting_encoder: float
    inpainting_decoder: float

    @property
    def inpainting(self) -> float:
        return self.inpainting_encoder + self.inpainting_decoder

    @property
    def official_frame(self) -> float:
        """The official demo per frame: kp_detector(driving) + dense motion + inpainting."""
        return self.kp_detector + self.dense_motion + self.inpainting

    @property
    def cached_frame(self) -> float:
        """Backends per frame: kp_detector(driving) + dense motion + inpainting decoder."""
        return self.kp_detector + self.dense_motion + self.inpainting_decoder

    @property
    def training_frame(self) -> float:
        """A training forward: kp of source and driving, bg, dense motion, inpainting."""
        return 2 * self.kp_detector + self.bg_predictor + self.dense_motion + self.inpainting

    def to_dict(self) -> dict:
        d = asdict(self)
        d.update(inpainting=self.inpainting, official_frame=self.official_frame, cached_frame=self.cached_frame,
                 training_frame=self.training_frame)
        return {k: (round(v, 4) if isinstance(v, float) else v) for k, v in d.items()}


def _gflops(fn) -> float:
    with FlopCounterMode(display=False) as counter:
        fn()
    return counter.get_total_flops() / 1e9


@torch.no_grad()
def count_network_flops(model: TPSMM | ModelConfig | str, image_size: int | None = None) -> NetworkFlops:
    """Count each network once on random inputs (float32, CPU).

    ``model``: a TPSMM (its weights are used as they are, FLOPs do not depend on them), a
    ModelConfig, or a config name / YAML path (a model is built with default initialisation).
    """
    if isinstance(model, (str, ModelConfig)):
        cfg = load_config(model) if isinstance(model, str) else model
        model = TPSMM(cfg).eval()
    cfg = model.config
    size = image_size or cfg.image_size
    param = next(model.parameters())
    gen = torch.Generator().manual_seed(0)
    src = torch.rand(1, cfg.num_channels, size, size, generator=gen).to(param.device)
    drv = torch.rand(1, cfg.num_channels, size, size, generator=gen).to(param.device)
    if model.kp_detector is None:  # landmark keypoints: the face mesh, not a network (0 FLOPs counted here)
        kp_flops = 0.0
        kp_s = torch.rand(1, cfg.num_kp, 2, generator=gen).to(param.device) * 1.2 - 0.6
        kp_d = (kp_s + 0.05 * torch.randn(kp_s.shape, generator=gen).to(param.device)).clamp(-1, 1)
    else:
        kp_flops = _gflops(lambda: model.kp_detector(drv))
        kp_s, kp_d = model.kp_detector(src), model.kp_detector(drv)
    bg_flops = _gflops(lambda: model.bg_predictor(src, drv)) if model.bg_predictor is not None else 0.0
    dm = model.dense_motion_network
    dm_flops = _gflops(lambda: dm(src, kp_d, kp_s))
    motion = dm(src, kp_d, kp_s)
    inp = model.inpainting_network
    enc_flops = _gflops(lambda: inp.encode(src))
    maps = inp.encode(src)
    dec_flops = _gflops(lambda: inp.decode_motion(maps, src, motion))
    return NetworkFlops(cfg.name, size, kp_flops, bg_flops, dm_flops, enc_flops, dec_flops)


def count_parameters(model: TPSMM) -> dict[str, int]:
    """Parameters per present network (official names) and ``total`` over all of them."""
    counts = {name: sum(p.numel() for p in module.parameters()) for name, module in model.submodules().items()}
    counts["total"] = sum(counts.values())
    return counts
