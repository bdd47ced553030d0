"""FLOPs of the FOMM networks per frame, counted as TPSMM's are (:mod:`splinecam.engines.tpsmm.flops`).

The same :class:`~splinecam.engines.tpsmm.flops.NetworkFlops` fields: ``kp_detector`` (one image),
``bg_predictor`` 0 (FOMM has none), ``dense_motion`` (one driving motion), ``inpainting_encoder`` (the
generator's encoder: first block + down blocks, run once per avatar by the backends) and
``inpainting_decoder`` (warp + occlusion + bottleneck + up blocks). The official demo's per frame is
kp_detector + dense motion + encoder + decoder; the backends' is the same less the encoder.
"""

from __future__ import annotations

import torch

from splinecam.engines.fomm.networks import FOMM
from splinecam.engines.tpsmm.flops import NetworkFlops, _gflops


@torch.no_grad()
def count_fomm_flops(model: FOMM, image_size: int | None = None) -> NetworkFlops:
    """Count each FOMM network once on random inputs (float32, CPU; weights as they are)."""
    cfg = model.config
    size = image_size or cfg.image_size
    param = next(model.parameters())
    gen = torch.Generator().manual_seed(0)
    src = torch.rand(1, cfg.num_channels, size, size, generator=gen).to(param.device)
    drv = torch.rand(1, cfg.num_channels, size, size, generator=gen).to(param.device)
    kp_flops = _gflops(lambda: model.kp_detector(drv))
    kp_s, kp_d = model.kp_detector.detect(src), model.kp_detector.detect(drv)
    g = model.generator
    dm_flops = _gflops(lambda: g.dense_motion_network(src, kp_d, kp_s))
    motion = g.dense_motion_network(src, kp_d, kp_s)
    enc_flops = _gflops(lambda: g.encode(src))
    feat = g.encode(src)
    dec_flops = _gflops(lambda: g.decode(feat, motion.deformation, motion.occlusion_map))
    return NetworkFlops(cfg.name, size, kp_flops, 0.0, dm_flops, enc_flops, dec_flops)


