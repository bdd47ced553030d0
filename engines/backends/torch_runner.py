"""PyTorch eager graph runner: CPU or CUDA; fp32, bf16 (CPU: autocast + channels_last) or fp16 (CUDA).

The reduced-precision paths autocast the convolutional networks only; TPS / local affine grids and
Gaussians are computed in float32 inside the family's ``FrameGenerator``. The model family
(:mod:`splinecam.engines.family`) supplies the source encoding and the frame generator. The loaded model is
never modified: when this runner needs it elsewhere (CUDA) or in another memory format
(channels_last), it works on a copy.
"""

from __future__ import annotations

import contextlib
import copy
import dataclasses

import numpy as np
import torch

from splinecam.engines.backends.base import GraphRunner
from splinecam.engines.backends.options import BackendOptions
from splinecam.engines.checkpoint_io import LoadedModel
from splinecam.engines.family import family_of

AUTOCAST = {"bf16": torch.bfloat16, "fp16": torch.float16}


def host_tensor(array: np.ndarray, device: torch.device) -> torch.Tensor:
    """A host float32 array as a tensor on ``device`` (zero-copy on the CPU)."""
    return torch.from_numpy(np.ascontiguousarray(array, np.float32)).to(device)


class TorchGraphs(GraphRunner):
    engine = "torch"

    def __init__(self, loaded: LoadedModel, device: str, precision: str, options: BackendOptions):
        self.device, self.precision = device, precision
        self.torch_device = torch.device(device)
        self.autocast_dtype = AUTOCAST.get(precision)
        self.channels_last = self.autocast_dtype is not None and device == "cpu"
        model = loaded.model
        if device != "cpu" or self.channels_last:
            model = copy.deepcopy(model).to(self.torch_device)
            if self.channels_last:
                model = model.to(memory_format=torch.channels_last)
        self.model = model.eval()
        family = family_of(loaded)
        self._frame = family.frame_generator()
        self.frame_inputs = family.host().FRAME_INPUTS
        self.generator = self._frame.FrameGenerator(self.model, with_bg=True).eval()

    def _autocast(self):
        if self.autocast_dtype is None:
            return contextlib.nullcontext()
        return torch.autocast(device_type=self.torch_device.type, dtype=self.autocast_dtype)

    def _input(self, image: np.ndarray) -> torch.Tensor:
        x = host_tensor(image, self.torch_device)
        return x.contiguous(memory_format=torch.channels_last) if self.channels_last else x

    @torch.inference_mode()
    def encode_source(self, source: np.ndarray, kp_source: np.ndarray | None = None):
        x = self._input(source)
        kp = None if kp_source is None else host_tensor(kp_source, self.torch_device)
        with self._autocast():
            src = self._frame.encode_source(self.model, x, kp)
        src = dataclasses.replace(src, small=src.small.float(), heat=src.heat.float(), kp=src.kp.float())
        return src.kp.cpu().numpy(), src

    @torch.inference_mode()
    def keypoints(self, image: np.ndarray) -> np.ndarray:
        with self._autocast():
            kp = self.model.kp_detector(self._input(image))
        return kp.float().cpu().numpy()

    @torch.inference_mode()
    def generate(self, source, feeds: dict[str, np.ndarray]) -> np.ndarray:
        frame = [host_tensor(feeds[name], self.torch_device) for name in self.frame_inputs]
        with self._autocast():
            out = self.generator(*source.as_inputs(), *frame)
        return out.float().cpu().numpy()

    @torch.inference_mode()
    def background(self, source: np.ndarray, driving: np.ndarray) -> np.ndarray | None:
        if getattr(self.model, "bg_predictor", None) is None:
            return None
        with self._autocast():
            return self.model.bg_predictor(self._input(source), self._input(driving)).float().cpu().numpy()
