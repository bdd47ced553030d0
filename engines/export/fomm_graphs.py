"""FOMM's exported graphs: the same three contracts as TPSMM's (:mod:`splinecam.engines.export.graphs`),
with FOMM's tensors. Batch 1, static shapes (S = image size, s = dense-motion size, K = keypoints,
C', S' = the generator's encoder channels and size):

``keypoints``       image (1,3,S,S) f32 in [0,1] → kp (1,K,6) f32 (x, y, 2×2 jacobian row-major)
``source_encoder``  source (1,3,S,S) f32 → kp_source (1,K,6) f32, source_small (1,3,s,s), source_heat
                    (1,K,s,s) f32, source_feat0 (1,C',S',S'), source_kp (1,K,2) f32 (its positions)
``generator``       source_small, source_heat, source_feat0, source_kp (the encoder's outputs, same
                    names), kp_driving (1,K,2), kp_jacobian (1,K,2,2) f32 → prediction (1,3,S,S) f32

No background graph (FOMM has no background motion). ``kp_jacobian`` is J_src · J_drv⁻¹, computed on the
host (:mod:`splinecam.engines.fomm.host`): no graph holds a matrix inverse, and the local affine warps
are elementwise products. Precision lives in the graph as for TPSMM: in an ``fp16`` graph the convolutional
networks run in float16 while keypoints, warp grids and Gaussians stay float32 at the graph boundary.
"""

from __future__ import annotations

import torch
from torch import nn

from splinecam.engines.export.graphs import EXPORT_DTYPES, GraphSpec, KeypointsGraph
from splinecam.engines.fomm.frame_generator import FrameGenerator
from splinecam.engines.fomm.host import generator_feeds
from splinecam.engines.fomm.networks import FOMM


class SourceEncoderGraph(nn.Module):
    """Per-avatar work: source (1,3,S,S) f32 → kp_source, source_small, source_heat, source_feat0, source_kp."""

    def __init__(self, model: FOMM, dtype: torch.dtype):
        super().__init__()
        self.kp_detector = model.kp_detector
        self.dense = model.generator.dense_motion_network
        self.generator = model.generator
        self.dtype = dtype

    def forward(self, source: torch.Tensor):
        image = source.to(self.dtype)
        kp = self.kp_detector(image).float()
        value = kp[..., :2]
        small = self.dense.downsample(image)
        heat = self.dense.source_heatmaps(value, small.shape[2], small.shape[3])
        return kp, small, heat, self.generator.encode(image), value * 1.0


class GeneratorGraph(nn.Module):
    """Per-frame warps + dense motion + decoder from the cached source tensors (see the module docstring)."""

    def __init__(self, model: FOMM):
        super().__init__()
        self.frame_generator = FrameGenerator(model)

    def forward(self, *inputs: torch.Tensor) -> torch.Tensor:
        return self.frame_generator(*inputs).float()


def source_tensor_names() -> list[str]:
    """Names of the cached source tensors, in the generator's input order."""
    return ["source_small", "source_heat", "source_feat0", "source_kp"]


def generator_input_names() -> list[str]:
    return FrameGenerator.input_names()


def graph_specs(model: FOMM, precision: str = "fp32", with_background: bool = True) -> list[GraphSpec]:
    """FOMM's graphs at one precision, with example inputs (float32 on the model's device); ``model`` is
    already in the precision's dtype. ``with_background`` is accepted for the common signature."""
    if precision not in EXPORT_DTYPES:
        raise ValueError(f"precision {precision!r}: export supports {', '.join(EXPORT_DTYPES)}")
    dtype = EXPORT_DTYPES[precision]
    cfg = model.config
    size = cfg.image_size
    dev = next(model.parameters()).device
    gen = torch.Generator().manual_seed(0)
    image = torch.rand(1, cfg.num_channels, size, size, generator=gen).to(dev)
    encoder = SourceEncoderGraph(model, dtype).eval()
    with torch.no_grad():
        source_outputs = encoder(image)
    kp_source = source_outputs[0]
    kp_driving = kp_source.clone()
    kp_driving[..., :2] = (kp_source[..., :2] + 0.05 * torch.randn(kp_source[..., :2].shape, generator=gen).to(dev))
    kp_driving[..., 2:] = kp_source[..., 2:] + 0.05 * torch.randn(kp_source[..., 2:].shape, generator=gen).to(dev)
    feeds = generator_feeds(cfg, kp_driving[0].cpu().numpy(), kp_source[0].cpu().numpy())
    frame = tuple(torch.from_numpy(feeds[n]).to(dev) for n in ("kp_driving", "kp_jacobian"))
    specs = [
        GraphSpec("keypoints", KeypointsGraph(model, dtype).eval(), (image,), ["image"], ["kp"]),
        GraphSpec("source_encoder", encoder, (image,), ["source"], ["kp_source"] + source_tensor_names()),
        GraphSpec("generator", GeneratorGraph(model).eval(), (*source_outputs[1:], *frame), generator_input_names(),
                  ["prediction"]),
    ]
    assert len(specs[2].example_inputs) == len(specs[2].input_names)
    return specs
