"""The exported graphs: thin torch wrappers that fix each engine's inputs, outputs and dtypes.

Four graphs per model, batch 1, static shapes (S = image size, s = S × dense-motion scale factor,
K = keypoints, T = TPS count, F = inpainting-encoder levels = num_down_blocks + 1):

``keypoints``       image (1,3,S,S) f32 in [0,1] → kp (1,K,2) f32
``source_encoder``  source (1,3,S,S) f32 [, kp_source_in (1,K,2) f32: landmark configs, whose keypoints
                    come from the face mesh] → kp_source (1,K,2) f32, source_image (1,3,S,S),
                    source_small (1,3,s,s), source_heat (1,K,s,s) f32, source_feat0..F-1
``generator``       source_image, source_small, source_heat, source_feat0..F-1 (the encoder's
                    outputs, same names), kp_driving (1,K,2), tps_theta (1,T,2,3),
                    tps_params (1,T,5,2), bg_param (1,3,3) f32 → prediction (1,3,S,S) f32
``background``      source (1,3,S,S), driving (1,3,S,S) f32 → bg_param (1,3,3) f32 (configs with bg)

Landmark configs (``kp_detector_params.head: landmarks``) have no ``keypoints`` graph.

The TPS systems are solved on the host (:func:`splinecam.engines.tpsmm.geometry.solve_tps`): no graph holds a
matrix inverse. ``bg_param`` is always an input of the generator; the identity matrix gives
exactly the no-background motion (x·1 + y·0 + 0 and a division by 1 are exact).

Precision lives in the graph (TensorRT strongly typed networks): in an ``fp16`` graph the
convolutional networks run in float16 while these stay float32 islands (:func:`model_in_dtype`):

* keypoints — the keypoint head's regression (``fc``), its ``sigmoid(·)·2 − 1`` (``head: fc``) or
  its soft-argmax (``head: heatmap``), so keypoints are not quantised to fp16 steps (~5e-4);
* the background affine (``bg_predictor``'s ``fc`` and the 3×3 it builds);
* every InstanceNormalization (mean and variance over up to 256×256 values per channel):
  computed on float32 inputs, cast back to float16 after; TensorRT 11 removed the per-layer
  compute-precision control, so the graph itself says float32;
* TPS grids and Gaussians (``log(r² + 1e-9)`` is NaN in fp16), in :mod:`splinecam.engines.tpsmm`.

The cached source tensors (``source_image``, ``source_small``, ``source_feat*``) are then float16;
everything crossing to or from the host (images, keypoints, TPS parameters, predictions) is float32
in every precision. ``fp32`` graphs are the unmodified model (the same ONNX bytes as before the
islands existed).
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
from torch import nn

from splinecam.engines.tpsmm.checkpoint import LoadedModel
from splinecam.engines.tpsmm.config import ModelConfig
from splinecam.engines.tpsmm.frame_generator import FrameGenerator
from splinecam.engines.tpsmm.geometry import kp2gaussian
from splinecam.engines.tpsmm.networks import TPSMM

GRAPH_NAMES = ("keypoints", "source_encoder", "generator", "background")
EXPORT_DTYPES = {"fp32": torch.float32, "fp16": torch.float16}


class KeypointsGraph(nn.Module):
    """image (1,3,S,S) f32 → kp (1,K,2) f32."""

    def __init__(self, model: TPSMM, dtype: torch.dtype):
        super().__init__()
        self.kp_detector = model.kp_detector
        self.dtype = dtype

    def forward(self, image: torch.Tensor) -> torch.Tensor:
        return self.kp_detector(image.to(self.dtype)).float()


class SourceEncoderGraph(nn.Module):
    """Per-avatar work: source (1,3,S,S) f32 → kp_source, source_image, source_small, source_heat, feats."""

    def __init__(self, model: TPSMM, dtype: torch.dtype):
        super().__init__()
        self.kp_detector = model.kp_detector
        self.dense = model.dense_motion_network
        self.inpaint = model.inpainting_network
        self.dtype = dtype

    def forward(self, source: torch.Tensor, kp_source: torch.Tensor | None = None):
        image = source.to(self.dtype)
        kp = self.kp_detector(image).float() if kp_source is None else kp_source.float() * 1.0
        small = self.dense.downsample(image)
        heat = kp2gaussian(kp, small.shape[2], small.shape[3], self.dense.kp_variance)
        features = self.inpaint.encode(image)
        return (kp, image, small, heat, *features)


class GeneratorGraph(nn.Module):
    """Per-frame dense motion + inpainting from the cached source tensors (see module docstring)."""

    def __init__(self, model: TPSMM):
        super().__init__()
        self.frame_generator = FrameGenerator(model, with_bg=True)

    def forward(self, *inputs: torch.Tensor) -> torch.Tensor:
        return self.frame_generator(*inputs).float()


class BackgroundGraph(nn.Module):
    """source, driving (1,3,S,S) f32 → bg_param (1,3,3) f32."""

    def __init__(self, model: TPSMM, dtype: torch.dtype):
        super().__init__()
        self.bg_predictor = model.bg_predictor
        self.dtype = dtype

    def forward(self, source: torch.Tensor, driving: torch.Tensor) -> torch.Tensor:
        return self.bg_predictor(source.to(self.dtype), driving.to(self.dtype)).float()


@dataclass
class GraphSpec:
    """One graph to export: its torch module, example inputs and I/O names (in order)."""

    name: str
    module: nn.Module
    example_inputs: tuple[torch.Tensor, ...]
    input_names: list[str]
    output_names: list[str]


def source_tensor_names(config: ModelConfig) -> list[str]:
    """Names of the cached source tensors, in the generator's input order."""
    levels = config.num_source_features
    return ["source_image", "source_small", "source_heat"] + [f"source_feat{i}" for i in range(levels)]


def generator_input_names(config: ModelConfig) -> list[str]:
    return source_tensor_names(config) + ["kp_driving", "tps_theta", "tps_params", "bg_param"]


def graph_specs(model: TPSMM, precision: str = "fp32", with_background: bool = True) -> list[GraphSpec]:
    """The graphs of one model at one precision, with example inputs (float32 on the model's device).

    ``model`` must already be in the precision's dtype (``model.to(EXPORT_DTYPES[precision])``);
    :func:`splinecam.engines.export.onnx_export.export_onnx` does that on a copy.
    """
    if precision not in EXPORT_DTYPES:
        raise ValueError(f"precision {precision!r}: export supports {', '.join(EXPORT_DTYPES)}")
    dtype = EXPORT_DTYPES[precision]
    cfg = model.config
    size, k, t = cfg.image_size, cfg.num_kp, cfg.num_tps
    dev = next(model.parameters()).device
    gen = torch.Generator().manual_seed(0)
    image = torch.rand(1, cfg.num_channels, size, size, generator=gen).to(dev)
    driving = torch.rand(1, cfg.num_channels, size, size, generator=gen).to(dev)

    encoder = SourceEncoderGraph(model, dtype).eval()
    landmarks = cfg.landmark_keypoints
    kp_in = (torch.rand(1, k, 2, generator=gen) * 1.2 - 0.6).to(dev) if landmarks else None
    with torch.no_grad():
        source_outputs = encoder(image, kp_in) if landmarks else encoder(image)
    kp_source = source_outputs[0]
    kp_driving = (kp_source + 0.05 * torch.randn(kp_source.shape, generator=gen).to(dev)).clamp(-1, 1)
    from splinecam.engines.tpsmm.geometry import solve_tps

    dm = model.dense_motion_network
    tps = solve_tps(kp_driving, kp_source, t, getattr(dm, "tps_regularise", "all"), getattr(dm, "tps_affine", None))
    bg = torch.eye(3, device=dev).view(1, 3, 3)
    src_names = source_tensor_names(cfg)
    specs = [] if landmarks else [GraphSpec("keypoints", KeypointsGraph(model, dtype).eval(), (image,), ["image"], ["kp"])]
    specs += [
        GraphSpec("source_encoder", encoder, (image, kp_in) if landmarks else (image,),
                  ["source", "kp_source_in"] if landmarks else ["source"], ["kp_source"] + src_names),
        GraphSpec("generator", GeneratorGraph(model).eval(),
                  (*source_outputs[1:], kp_driving, tps.theta.contiguous(), tps.control_params.contiguous(), bg),
                  generator_input_names(cfg), ["prediction"]),
    ]
    if with_background and model.bg_predictor is not None:
        specs.append(GraphSpec("background", BackgroundGraph(model, dtype).eval(), (image, driving),
                               ["source", "driving"], ["bg_param"]))
    generator = next(s for s in specs if s.name == "generator")
    assert len(generator.example_inputs) == len(generator.input_names)
    assert (k, t) == (kp_source.shape[1], tps.theta.shape[1])
    return specs


class Float32InstanceNorm(nn.Module):
    """An ``nn.InstanceNorm2d`` (affine, no running statistics) computed in float32 inside a reduced-
    precision network: input cast to float32, normalised with float32 scale and bias, cast back."""

    def __init__(self, norm: nn.InstanceNorm2d):
        super().__init__()
        if norm.track_running_stats or not norm.affine:
            raise ValueError("Float32InstanceNorm replaces affine InstanceNorm2d without running statistics")
        self.eps = norm.eps
        self.weight = nn.Parameter(norm.weight.detach().float().clone(), requires_grad=False)
        self.bias = nn.Parameter(norm.bias.detach().float().clone(), requires_grad=False)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        y = torch.nn.functional.instance_norm(x.float(), None, None, self.weight, self.bias, True, 0.0, self.eps)
        return y.to(x.dtype)


class Float32Linear(nn.Module):
    """An ``nn.Linear`` computed in float32 (float32 weights, input cast up); its output stays float32,
    so what follows it (the keypoint head's sigmoid·2−1, the background's 3×3) is float32 too."""

    def __init__(self, linear: nn.Linear):
        super().__init__()
        self.weight = nn.Parameter(linear.weight.detach().float().clone(), requires_grad=False)
        self.bias = None if linear.bias is None else nn.Parameter(linear.bias.detach().float().clone(),
                                                                 requires_grad=False)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return torch.nn.functional.linear(x.float(), self.weight, self.bias)


def _float32_islands(model: TPSMM) -> dict[str, nn.Module]:
    """Name → module of everything an fp16 graph keeps in float32 (see the module docstring)."""
    islands: dict[str, nn.Module] = {}
    for name, module in model.named_modules():
        if isinstance(module, nn.InstanceNorm2d):
            islands[name] = module
    for name in ("kp_detector.fg_encoder.fc", "bg_predictor.bg_encoder.fc"):
        module = model.get_submodule(name) if _has_submodule(model, name) else None
        if isinstance(module, nn.Linear):
            islands[name] = module
    return islands


def _has_submodule(model: nn.Module, name: str) -> bool:
    try:
        return model.get_submodule(name) is not None
    except AttributeError:
        return False


def model_in_dtype(loaded: LoadedModel, precision: str) -> TPSMM:
    """A copy of the model in the export precision's dtype (the loaded model is left untouched).

    fp32: the model as loaded. fp16: the networks in float16 with the float32 islands of the module
    docstring, their float32 weights taken from the loaded model (never rounded through fp16).
    """
    import copy

    dtype = EXPORT_DTYPES[precision]
    model = copy.deepcopy(loaded.model).eval()
    if dtype == torch.float32:
        return model
    model = model.to(dtype)
    for name, original in _float32_islands(loaded.model).items():
        parent_name, _, child = name.rpartition(".")
        parent = model.get_submodule(parent_name) if parent_name else model
        island = Float32InstanceNorm(original) if isinstance(original, nn.InstanceNorm2d) else Float32Linear(original)
        setattr(parent, child, island.to(next(original.parameters()).device).eval())
    return model
