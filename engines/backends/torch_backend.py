"""PyTorch backend: CPU or CUDA; fp32, bf16 (CPU: autocast + channels_last) or fp16 (CUDA).

The reduced-precision paths autocast the convolutional networks only; TPS grids and Gaussians are
computed in float32 inside :class:`FrameGenerator` with autocast switched off.
"""

from __future__ import annotations

import contextlib

import numpy as np
import torch

from splinecam.engines.backends.base import Backend, SourceState
from splinecam.engines.errors import BackendUnavailableError
from splinecam.engines.tpsmm.checkpoint import LoadedModel
from splinecam.engines.tpsmm.frame_generator import FrameGenerator, SourceTensors, encode_source
from splinecam.engines.tpsmm.geometry import solve_tps


def to_tensor(image: np.ndarray, device) -> torch.Tensor:
    """(S,S,3) RGB → (1,3,S,S) float32 in [0,1]; uint8 is scaled by 1/255, float32 taken as is."""
    x = torch.from_numpy(np.ascontiguousarray(image)).to(device).permute(2, 0, 1)[None]
    return x.float() / 255.0 if x.dtype == torch.uint8 else x.float()


def to_image(tensor: torch.Tensor) -> np.ndarray:
    """(1,3,S,S) float in [0,1] → (S,S,3) uint8 RGB (rounded, clipped)."""
    arr = tensor[0].float().clamp(0, 1).mul(255).round().byte().permute(1, 2, 0)
    return arr.cpu().numpy()


class TorchBackend(Backend):
    name = "torch"

    def __init__(self, loaded: LoadedModel, device: str = "cpu", precision: str = "fp32"):
        super().__init__(loaded.config, device, precision, loaded.has_avd)
        self.loaded = loaded
        if device == "cuda" and not torch.cuda.is_available():
            raise BackendUnavailableError("--device cuda: no CUDA GPU is visible to torch; use --device cpu")
        if precision == "fp16" and device != "cuda":
            raise BackendUnavailableError("--precision fp16 runs on CUDA only; on CPU use bf16 or fp32")
        if precision == "bf16" and device == "cpu" and not _cpu_has_bf16():
            raise BackendUnavailableError("--precision bf16 needs a CPU with AVX-512 bf16 / AMX; use fp32")
        self.torch_device = torch.device(device)
        self.model = loaded.model.to(self.torch_device).eval()
        self.has_bg = loaded.has_bg
        self.autocast_dtype = {"bf16": torch.bfloat16, "fp16": torch.float16}.get(precision)
        if self.autocast_dtype is not None and device == "cpu":
            self.model = self.model.to(memory_format=torch.channels_last)
        self.generator = FrameGenerator(self.model, with_bg=False)
        self.generator_bg = FrameGenerator(self.model, with_bg=True) if loaded.has_bg else None

    def _autocast(self):
        if self.autocast_dtype is None:
            return contextlib.nullcontext()
        return torch.autocast(device_type=self.torch_device.type, dtype=self.autocast_dtype)

    def _input(self, image: np.ndarray) -> torch.Tensor:
        x = to_tensor(image, self.torch_device)
        if self.autocast_dtype is not None and self.device == "cpu":
            x = x.contiguous(memory_format=torch.channels_last)
        return x

    @torch.inference_mode()
    def prepare_source(self, image: np.ndarray) -> SourceState:
        x = self._input(image)
        with self._autocast():
            src = encode_source(self.model, x)
        src = SourceTensors(x, src.small.float(), src.heat.float(), src.features, src.kp.float())
        return SourceState(image=image, kp=src.kp[0].cpu().numpy().astype(np.float32), tensors=src)

    @torch.inference_mode()
    def keypoints(self, frame: np.ndarray) -> np.ndarray:
        with self._autocast():
            kp = self.model.kp_detector(self._input(frame))
        return kp[0].float().cpu().numpy()

    @torch.inference_mode()
    def generate(self, source: SourceState, kp_driving: np.ndarray, bg_param: np.ndarray | None = None) -> np.ndarray:
        src: SourceTensors = source.tensors
        kp = torch.from_numpy(np.asarray(kp_driving, dtype=np.float32)).to(self.torch_device)[None]
        tps = solve_tps(kp, src.kp, self.config.num_tps)
        gen = self.generator
        extra = []
        if bg_param is not None and self.generator_bg is not None:
            gen = self.generator_bg
            extra = [torch.from_numpy(np.asarray(bg_param, dtype=np.float32)).to(self.torch_device)[None]]
        with self._autocast():
            out = gen(*src.as_inputs(), kp, tps.theta, tps.control_params, *extra)
        return to_image(out)

    @torch.inference_mode()
    def avd(self, kp_source: np.ndarray, kp_driving: np.ndarray) -> np.ndarray:
        if not self.has_avd:
            raise BackendUnavailableError("this checkpoint has no AVD network: use --mode relative or standard")
        ks = torch.from_numpy(np.asarray(kp_source, np.float32))[None].to(self.torch_device)
        kd = torch.from_numpy(np.asarray(kp_driving, np.float32))[None].to(self.torch_device)
        return self.model.avd_network(ks, kd)[0].float().cpu().numpy()

    @torch.inference_mode()
    def background(self, source: SourceState, frame: np.ndarray) -> np.ndarray:
        if self.model.bg_predictor is None or not self.has_bg:
            return np.eye(3, dtype=np.float32)
        with self._autocast():
            out = self.model.bg_predictor(source.tensors.image, self._input(frame))
        return out[0].float().cpu().numpy()


def _cpu_has_bf16() -> bool:
    """bf16 in hardware (AVX-512 bf16 / AMX), honouring an ISA cap (engines/cpu.py)."""
    from splinecam.engines.cpu import cpu_info

    return cpu_info().has_bf16
