"""torch → inductor-compiled CPU graphs: the fastest CPU path (bf16 generator, channels_last, frozen).

What the official demo does per frame in float32 eager — keypoints, dense motion and inpainting
including the source encoder — splinecam does with the source cached and the keypoint detector
and frame generator compiled by ``torch.compile`` (inductor, ``freezing``: weights constant-folded
and pre-packed for oneDNN, instance norm / ReLU / casts fused into C++ kernels). The generator
(dense motion + inpainting, 95 % of the work) runs with bfloat16 weights and activations in
channels_last, which oneDNN runs on AMX / AVX-512 bf16. The keypoint detector stays float32 (it
is cheap, and a bf16 keypoint error of ~0.004 moves every TPS enough to cost several dB); so do the
TPS solve (host), TPS grids and Gaussians (:class:`splinecam.engines.tpsmm.frame_generator.FrameGenerator`
keeps them so).

Compiling takes one to a few minutes on a small CPU the first time; inductor caches its kernels
(``$TORCHINDUCTOR_CACHE_DIR``, default under /tmp), so later starts are quicker. The first two
calls after compiling are slow (weight packing): :meth:`CompiledTorchBackend.warm_up` runs them.
"""

from __future__ import annotations

import copy
import time
from typing import Callable

import numpy as np
import torch

from splinecam.engines.backends.base import SourceState
from splinecam.engines.backends.torch_backend import TorchBackend, to_image
from splinecam.engines.errors import BackendUnavailableError
from splinecam.engines.tpsmm.checkpoint import LoadedModel
from splinecam.engines.tpsmm.frame_generator import FrameGenerator, SourceTensors
from splinecam.engines.tpsmm.geometry import kp2gaussian, solve_tps

Progress = Callable[[str], None]
COMPILE_DTYPES = {"bf16": torch.bfloat16, "fp32": torch.float32}


def _compile(module: torch.nn.Module):
    """torch.compile for inference; call the result inside :func:`_freezing` (compiles happen lazily)."""
    import logging

    # the CUDA build of torch warns "No CUDA runtime is found" while building CPU kernels: not ours to show
    logging.getLogger("torch.utils.cpp_extension").setLevel(logging.ERROR)
    return torch.compile(module, dynamic=False)


def _freezing():
    """Inductor's ``freezing`` (weights constant-folded and pre-packed), for the compiles of this call only.

    Set as the global inductor config around each compiled call rather than through
    ``torch.compile(options=…)``: measured on vox-256 the options route produced a generator 15 %
    slower (253 vs 224 ms per frame), so not every freezing pass sees it.
    """
    import torch._inductor.config as inductor_config

    return inductor_config.patch(freezing=True)


class CompiledTorchBackend(TorchBackend):
    """The torch backend on CPU with compiled keypoint detector (float32) and frame generator.

    Same interface and outputs as :class:`TorchBackend`; ``precision`` is the generator's: bf16
    (weights cast once, no autocast) or fp32. The model given is not modified (copies are cast).
    """

    def __init__(self, loaded: LoadedModel, precision: str = "bf16", progress: Progress | None = None,
                 warm_up: bool = True):
        if precision not in COMPILE_DTYPES:
            raise BackendUnavailableError(f"compiled torch on CPU runs bf16 or fp32, not {precision}")
        super().__init__(loaded, "cpu", precision)
        say = progress or (lambda msg: print(f"splinecam: {msg}", flush=True))
        self.dtype = COMPILE_DTYPES[precision]
        self.autocast_dtype = None  # weights are cast, not autocast
        self.fast = copy.deepcopy(loaded.model).to(self.dtype).to(memory_format=torch.channels_last).eval()
        self.kp_fp32 = copy.deepcopy(loaded.model.kp_detector).to(memory_format=torch.channels_last).eval()
        self.generator = FrameGenerator(self.fast, with_bg=True).eval()
        self._kp = _compile(self.kp_fp32)
        self._gen = _compile(self.generator)
        self._warm = False
        if warm_up:
            t0 = time.perf_counter()
            say(f"compiling the {precision} CPU kernels (a minute or more the first time; cached afterwards) …")
            self.warm_up()
            say(f"compiled in {time.perf_counter() - t0:.0f} s")

    def describe(self) -> str:
        return f"torch/cpu/{self.precision}+compiled"

    def _input(self, image: np.ndarray, dtype: torch.dtype | None = None) -> torch.Tensor:
        from splinecam.engines.backends.torch_backend import to_tensor

        x = to_tensor(image, self.torch_device)
        return x.to(dtype or self.dtype).contiguous(memory_format=torch.channels_last)

    def warm_up(self) -> None:
        """Compile and run both graphs twice (the first runs pack weights) on a grey frame."""
        if self._warm:
            return
        grey = np.full((self.size, self.size, 3), 128, np.uint8)
        state = self.prepare_source(grey)
        for _ in range(2):
            self.generate(state, self.keypoints(grey))
        self._warm = True

    @torch.no_grad()  # not inference_mode: these tensors feed the compiled graph
    def prepare_source(self, image: np.ndarray) -> SourceState:
        x = self._input(image)
        with _freezing():
            kp = self._kp(self._input(image, torch.float32)).float()  # float32 source keypoints
        dm = self.fast.dense_motion_network
        small = dm.downsample(x)  # once per avatar: eager is fine
        heat = kp2gaussian(kp, small.shape[2], small.shape[3], dm.kp_variance)
        src = SourceTensors(x, small, heat, self.fast.inpainting_network.encode(x), kp)
        return SourceState(image=image, kp=src.kp[0].cpu().numpy().astype(np.float32), tensors=src)

    @torch.no_grad()
    def keypoints(self, frame: np.ndarray) -> np.ndarray:
        with self.timer.time("keypoints"), _freezing():
            return self._kp(self._input(frame, torch.float32))[0].float().cpu().numpy()

    @torch.no_grad()
    def generate(self, source: SourceState, kp_driving: np.ndarray, bg_param: np.ndarray | None = None) -> np.ndarray:
        with self.timer.time("generate"):
            return to_image(self.predict(source, kp_driving, bg_param))

    @torch.no_grad()
    def predict(self, source: SourceState, kp_driving: np.ndarray, bg_param: np.ndarray | None = None) -> torch.Tensor:
        """(K,2) driving keypoints [+ (3,3) background] → (1,3,S,S) prediction (float, [0,1])."""
        src: SourceTensors = source.tensors
        kp = torch.from_numpy(np.asarray(kp_driving, dtype=np.float32))[None]
        tps = solve_tps(kp, src.kp, self.config.num_tps)
        bg = torch.eye(3)[None] if bg_param is None else torch.from_numpy(np.asarray(bg_param, np.float32))[None]
        with _freezing():
            return self._gen(*src.as_inputs(), kp, tps.theta, tps.control_params, bg)

    @torch.inference_mode()
    def background(self, source: SourceState, frame: np.ndarray) -> np.ndarray:
        if self.fast.bg_predictor is None or not self.has_bg:
            return np.eye(3, dtype=np.float32)
        return self.fast.bg_predictor(source.tensors.image, self._input(frame))[0].float().cpu().numpy()
