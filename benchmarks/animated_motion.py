"""An animation set up as ``splinecam animate`` does, frame by frame with the torch model's dense motion.

What the motion-field tools share (``dark_provenance``: where dark pixels come from; ``motion_folds``: where
the grid folds): the avatar's face crop and the driving clip's face-cropped frames (animate's own
``prepare_inputs``), a backend as animate builds it, relative keypoints calibrated on frame 0, and for each
frame the keypoints the backend is fed and the torch model's :class:`~splinecam.engines.tpsmm.motion.DenseMotion`
for them (deformation (1,s,s,2), transformations (1,T+1,s,s,2)).
"""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import numpy as np


def animation_uint8(image: np.ndarray) -> np.ndarray:
    """An avatar crop as animate holds it (uint8, or float32 in [0,1]) → uint8 RGB."""
    return np.asarray(image if image.dtype == np.uint8 else (image * 255).round(), np.uint8)


def animation_inputs(source_path: str, driving_path: str, size: int, max_frames: int | None = None):
    """animate's inputs: the avatar's face crop and the driving clip's face-cropped frames."""
    from splinecam.live.animate import AnimateOptions, prepare_inputs

    return prepare_inputs(AnimateOptions(Path(source_path), Path(driving_path), Path("unused.mp4"),
                                         max_frames=max_frames), size)


@dataclass
class AnimatedMotion:
    """One animation, ready to run: iterate for (keypoints (K,2) float32, DenseMotion) per driving frame.
    ``source`` is the avatar's (S,S,3) uint8 crop, ``backend`` / ``state`` what generates its frames."""

    loaded: object
    backend: object
    state: object
    inputs: object
    source: np.ndarray

    @property
    def size(self) -> int:
        return self.loaded.config.image_size

    @classmethod
    def open(cls, source_path: str, driving_path: str, checkpoint: str | None = None, max_frames: int | None = None,
             backend: str = "auto", device: str = "auto", precision: str = "auto",
             tool: str = "this tool") -> "AnimatedMotion":
        """Load the weights (``checkpoint``; None: the bundled ones) and build the backend as animate's
        ``--backend/--device/--precision``. Without torch: SystemExit naming the install."""
        from splinecam.engines.backends.options import BackendOptions
        from splinecam.engines.model_options import build_backend, load_model

        loaded = load_model(checkpoint)
        if loaded.model is None:
            raise SystemExit(f"{tool} needs torch (the motion field is the torch model's): pip install torch")
        inputs = animation_inputs(source_path, driving_path, loaded.config.image_size, max_frames)
        source = animation_uint8(inputs.source)
        runner = build_backend(loaded, backend, device, precision, BackendOptions(), source, say=lambda m: None)
        return cls(loaded, runner, runner.prepare_source(inputs.source), inputs, source)

    def __iter__(self) -> Iterator[tuple[np.ndarray, object]]:
        import torch

        from splinecam.live.normalise import KeypointNormaliser

        normaliser = KeypointNormaliser(self.state.kp, "relative", None, True)
        src_t = torch.from_numpy(self.source).permute(2, 0, 1)[None].float() / 255
        kp_s = torch.from_numpy(np.asarray(self.state.kp, np.float32))[None]
        for i, frame in enumerate(self.inputs.frames):
            if i == 0:  # animate's reference frame 0: calibrated on it, then driven by it (the same calls)
                normaliser.calibrate(self.backend.keypoints(frame))
            kp = normaliser(self.backend.keypoints(frame))
            with torch.inference_mode():
                motion = self.loaded.model.dense_motion_network(
                    src_t, torch.from_numpy(np.asarray(kp, np.float32))[None], kp_s, None)
            yield kp, motion
