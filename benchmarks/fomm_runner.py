"""The official FOMM demo's per-frame work, as the bench baseline of FOMM checkpoints.

What ``demo.py --relative --adapt_scale`` (and Avatarify's local predictor) does per frame, torch
float32 eager, uncached: ``kp_detector(driving)``, ``normalize_kp`` (relative movement, relative
jacobian, the hull scale fixed at the reference frame), then the whole ``OcclusionAwareGenerator``
(source encoder, dense motion with its 2×2 inverses in torch, decoder, and the ``deformed`` source the
official forward always computes). Source keypoints once. The splinecam rows it is compared with cache
the source and invert on the host (:class:`splinecam.benchmarks.runner.BackendRunner`).
"""

from __future__ import annotations

import time

from splinecam.benchmarks.runner import OfficialBaseline
from splinecam.engines.fomm.networks import FommKeypoints


class FommOfficialBaseline(OfficialBaseline):
    """torch fp32 eager, uncached: FOMM's kp_detector + the whole generator every frame. Set-up (source
    keypoints, the reference frame's calibration) and the large-motion frame are the TPSMM baseline's: FOMM's
    detector returns packed (K, 6) keypoint rows and ``FOMM.animate`` takes them."""

    variant = ("torch fp32 eager, uncached: FOMM kp_detector + OcclusionAwareGenerator per frame "
               "(official demo --relative --adapt_scale)")

    def frame(self, driving):
        import torch

        with torch.inference_mode():
            t0 = time.perf_counter()
            kp = self._keypoints(driving)
            t1 = time.perf_counter()
            kp_norm = torch.from_numpy(self.normaliser(kp))[None].to(self.device)
            t2 = time.perf_counter()
            out = self.model.generator(self.source, FommKeypoints.unpack(kp_norm), FommKeypoints.unpack(self.kp_source))
            pred = out.prediction
            self._sync()
            frame = pred[0].clamp(0, 1).mul(255).round().byte().permute(1, 2, 0).cpu().numpy()
            t3 = time.perf_counter()
        return frame, {"keypoints": (t1 - t0) * 1e3, "normalise": (t2 - t1) * 1e3, "generator": (t3 - t2) * 1e3}
