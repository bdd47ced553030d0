"""torch → inductor-compiled CPU graphs: bf16 generator, channels_last, frozen weights.

What the official demo does per frame in float32 eager — keypoints, dense motion and inpainting
including the source encoder — this runner does with the source cached and the keypoint detector
and frame generator compiled by ``torch.compile`` (inductor, ``freezing``: weights constant-folded
and pre-packed for oneDNN, instance norm / ReLU / casts fused into C++ kernels). The generator
(dense motion + inpainting, 95 % of the work) runs with bfloat16 weights and activations in
channels_last, which oneDNN runs on AMX / AVX-512 bf16. The keypoint detector stays float32 (it
is cheap, and a bf16 keypoint error of ~0.004 moves every TPS enough to cost several dB); so do the
TPS solve (host), TPS grids and Gaussians (:class:`splinecam.engines.tpsmm.frame_generator.FrameGenerator`
keeps them so).

Compiling takes one to a few minutes on a small CPU the first time; inductor caches its kernels
(``$TORCHINDUCTOR_CACHE_DIR``, default under /tmp), so later starts are quicker. The first two
calls after compiling are slow (weight packing): the constructor runs them. The loaded model is not
modified (copies are cast).
"""

from __future__ import annotations

import copy
import time

import numpy as np
import torch

from splinecam.engines.backends.base import GraphRunner
from splinecam.engines.backends.options import BackendOptions
from splinecam.engines.backends.torch_runner import host_tensor
from splinecam.engines.errors import BackendUnavailableError
from splinecam.engines.checkpoint_io import LoadedModel
from splinecam.engines.family import family_of

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


class CompiledTorchGraphs(GraphRunner):
    """Compiled keypoint detector (float32) and frame generator (``precision``: bf16 weights cast once,
    no autocast; or fp32) on the CPU."""

    engine = "torch"

    def __init__(self, loaded: LoadedModel, device: str, precision: str, options: BackendOptions,
                 warm_up: bool = True):
        if device != "cpu" or precision not in COMPILE_DTYPES:
            raise BackendUnavailableError(f"compiled torch runs bf16 or fp32 on the CPU, not {precision} on {device}")
        self.device, self.precision = device, precision
        self.config = loaded.config
        self.dtype = COMPILE_DTYPES[precision]
        self.fast = copy.deepcopy(loaded.model).to(self.dtype).to(memory_format=torch.channels_last).eval()
        family = family_of(loaded)
        self._frame, host = family.frame_generator(), family.host()
        self.frame_inputs, self._generator_feeds, self.kp_width = host.FRAME_INPUTS, host.generator_feeds, family.kp_width
        self.generator = self._frame.FrameGenerator(self.fast, with_bg=True).eval()
        self._kp = None
        if loaded.model.kp_detector is not None:
            self.kp_fp32 = copy.deepcopy(loaded.model.kp_detector).to(memory_format=torch.channels_last).eval()
            self._kp = _compile(self.kp_fp32)
        self._gen = _compile(self.generator)
        if warm_up:
            t0 = time.perf_counter()
            options.say(f"compiling the {precision} CPU kernels (a minute or more the first time; cached afterwards) …")
            self.warm_up()
            options.say(f"compiled in {time.perf_counter() - t0:.0f} s")

    def describe(self) -> str:
        return f"torch/cpu/{self.precision}+compiled"

    def _input(self, image: np.ndarray, dtype: torch.dtype | None = None) -> torch.Tensor:
        return host_tensor(image, torch.device("cpu")).to(dtype or self.dtype).contiguous(memory_format=torch.channels_last)

    def warm_up(self) -> None:
        """Compile and run both graphs twice (the first runs pack weights) on a grey frame. A model without a
        keypoint network (face-mesh landmarks) is warmed up on fixed keypoints spread over the frame: all
        keypoints at one point make every TPS system singular (the compiled path failed to build for the
        bundled model with "Singular matrix" before)."""
        s = self.config.image_size
        grey = np.full((1, 3, s, s), 128 / 255, np.float32)
        fixed = None if self._kp is not None else \
            np.random.default_rng(0).uniform(-0.6, 0.6, (1, self.config.num_kp, 2)).astype(np.float32)
        kp, state = self.encode_source(grey, fixed)
        kp = kp.reshape(-1, self.kp_width)
        for _ in range(2):
            driving = self.keypoints(grey).reshape(-1, self.kp_width) if self._kp is not None else kp
            self.generate(state, self._generator_feeds(self.config, driving, kp))

    @torch.no_grad()  # not inference_mode: these tensors feed the compiled graph
    def encode_source(self, source: np.ndarray, kp_source: np.ndarray | None = None):
        x = self._input(source)
        if kp_source is not None:
            kp = host_tensor(kp_source, torch.device("cpu"))
        else:
            with _freezing():
                kp = self._kp(self._input(source, torch.float32)).float()  # float32 source keypoints
        src = self._frame.encode_source(self.fast, x, kp)  # once per avatar: eager is fine
        return src.kp.cpu().numpy(), src

    @torch.no_grad()
    def keypoints(self, image: np.ndarray) -> np.ndarray:
        with _freezing():
            return self._kp(self._input(image, torch.float32)).float().cpu().numpy()

    @torch.no_grad()
    def generate(self, source, feeds: dict[str, np.ndarray]) -> np.ndarray:
        frame = [host_tensor(feeds[name], torch.device("cpu")) for name in self.frame_inputs]
        with _freezing():
            return self._gen(*source.as_inputs(), *frame).float().cpu().numpy()

    @torch.inference_mode()
    def background(self, source: np.ndarray, driving: np.ndarray) -> np.ndarray | None:
        if getattr(self.fast, "bg_predictor", None) is None:
            return None
        return self.fast.bg_predictor(self._input(source), self._input(driving)).float().cpu().numpy()
