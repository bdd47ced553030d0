"""The official FOMM demo's per-frame work, as the bench baseline of FOMM checkpoints.

What ``demo.py --relative --adapt_scale`` (and Avatarify's local predictor) does per frame, torch
float32 eager, uncached: ``kp_detector(driving)``, ``normalize_kp`` (relative movement, relative
jacobian, the hull scale fixed at the reference frame), then the whole ``OcclusionAwareGenerator``
(source encoder, dense motion with its 2×2 inverses in torch, decoder, and the ``deformed`` source the
official forward always computes). Source keypoints once. The splinecam rows it is compared with cache
the source and invert on the host (:class:`splinecam.benchmarks.runner.BackendRunner`).
"""

from __future__ import annotations

import copy
import time

import numpy as np

from splinecam.benchmarks.runner import OfficialBaseline, RowSpec, _nchw
from splinecam.engines.checkpoint_io import LoadedModel
from splinecam.engines.fomm.networks import FommKeypoints
from splinecam.live.normalise import KeypointNormaliser


class FommOfficialBaseline(OfficialBaseline):
    """torch fp32 eager, uncached: FOMM's kp_detector + the whole generator every frame."""

    variant = ("torch fp32 eager, uncached: FOMM kp_detector + OcclusionAwareGenerator per frame "
               "(official demo --relative --adapt_scale)")

    def __init__(self, loaded: LoadedModel, device: str = "cpu"):
        import torch

        from splinecam.benchmarks.results import BASELINE_BACKEND

        self.spec = RowSpec(BASELINE_BACKEND, "fp32", device, baseline=True)
        self.device = torch.device(device)
        self.model = copy.deepcopy(loaded.model).float().to(self.device).eval()
        self._sync = torch.cuda.synchronize if self.device.type == "cuda" else (lambda: None)

    def setup(self, source, reference):
        import torch

        with torch.inference_mode():
            self.source = _nchw(source, self.device)
            self.kp_source = self.model.kp_detector(self.source)
            kp_ref = self.model.kp_detector(_nchw(reference, self.device))[0].cpu().numpy()
        self.normaliser = KeypointNormaliser(self.kp_source[0].cpu().numpy(), "relative")
        self.normaliser.calibrate(kp_ref)

    def frame(self, driving):
        import torch

        with torch.inference_mode():
            t0 = time.perf_counter()
            kp = self.model.kp_detector(_nchw(driving, self.device))[0].cpu().numpy()
            t1 = time.perf_counter()
            kp_norm = torch.from_numpy(self.normaliser(kp))[None].to(self.device)
            t2 = time.perf_counter()
            out = self.model.generator(self.source, FommKeypoints.unpack(kp_norm), FommKeypoints.unpack(self.kp_source))
            pred = out.prediction
            self._sync()
            frame = pred[0].clamp(0, 1).mul(255).round().byte().permute(1, 2, 0).cpu().numpy()
            t3 = time.perf_counter()
        return frame, {"keypoints": (t1 - t0) * 1e3, "normalise": (t2 - t1) * 1e3, "generator": (t3 - t2) * 1e3}

    def generate_kp(self, kp_driving: np.ndarray) -> np.ndarray:
        import torch

        with torch.inference_mode():
            kp = torch.from_numpy(np.asarray(kp_driving, np.float32))[None].to(self.device)
            pred = self.model.animate(self.source, self.kp_source, kp)
            return pred[0].clamp(0, 1).mul(255).round().byte().permute(1, 2, 0).cpu().numpy()
