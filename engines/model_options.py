"""The model / backend options every inference command shares, and the bundled default weights.

    add_model_arguments(parser)          # --checkpoint --config --backend --device --precision
    loaded = load_model_from_args(args)  # bundled weights when no --checkpoint is given
    backend = backend_from_args(args, loaded)
"""

from __future__ import annotations

import argparse
from pathlib import Path

import numpy as np

from splinecam.engines.backends import (BACKENDS, DEVICE_CHOICES, PRECISIONS, Backend, BackendOptions, create_backend,
                                        resolve_choice)
from splinecam.engines.errors import CheckpointError
from splinecam.engines.loaded_model import LoadedModel

WEIGHTS_DIR = Path(__file__).resolve().parent / "weights"
DEFAULT_WEIGHTS = WEIGHTS_DIR / "cpu-256.safetensors"


def default_checkpoint() -> Path:
    """The bundled weights (trained by ``splinecam train``; see training/BUNDLED.md)."""
    if not DEFAULT_WEIGHTS.is_file():
        raise CheckpointError(f"the bundled weights {DEFAULT_WEIGHTS} are missing from this install: "
                              f"reinstall splinecam or pass --checkpoint PATH")
    return DEFAULT_WEIGHTS


def add_model_arguments(parser: argparse.ArgumentParser, backends: bool = True) -> None:
    """--checkpoint/--config, and unless ``backends`` is False --backend/--device/--precision."""
    g = parser.add_argument_group("model")
    g.add_argument("--checkpoint", metavar="PATH",
                   help="official TPSMM .pth.tar (vox.pth.tar …), official FOMM / Avatarify .pth.tar "
                        "(vox-adv-cpk.pth.tar …) or splinecam .safetensors (default: the bundled cpu-256 weights)")
    g.add_argument("--config", metavar="NAME|YAML",
                   help="model config: a built-in name (vox-256, taichi-256, ted-384, mgif-256, lite-256, cpu-256, "
                        "kpmask-256; FOMM: fomm-vox-256, fomm-vox-adv-256) or an official-layout TPSMM / FOMM YAML; "
                        "safetensors carry their own, official checkpoints are matched to a built-in config by shape "
                        "when omitted")
    if backends:
        g.add_argument("--backend", default="auto", choices=("auto",) + BACKENDS,
                       help="where the networks run (default auto: see README, 'Backends')")
        g.add_argument("--device", default="auto", choices=DEVICE_CHOICES,
                       help="cpu, cuda (NVIDIA), intel-gpu (OpenVINO's GPU plugin) (default: cuda when available, "
                            "else cpu)")
        g.add_argument("--precision", default="auto", choices=("auto",) + PRECISIONS,
                       help="network precision; TPS and Gaussian maths stay float32 (default auto)")
        add_compile_argument(g)
        g.add_argument("--retune", action="store_true",
                       help="with --backend auto on a CPU: measure the candidates again instead of using the "
                            "remembered winner for this machine and model")
        add_calibration_argument(g)


def add_relative_jacobian_argument(group) -> None:
    """--relative-jacobian / --no-relative-jacobian: FOMM's relative mode with or without the jacobian part."""
    group.add_argument("--relative-jacobian", action=argparse.BooleanOptionalAction, default=True,
                       help="FOMM checkpoints, --mode relative: also make the keypoints' jacobians relative "
                            "(J_drv·J_ref⁻¹·J_src, as the official demo's --relative; default on); "
                            "--no-relative-jacobian moves positions only and keeps the driver's jacobians "
                            "(Avatarify's default). TPSMM keypoints have no jacobians: no effect")


def add_compile_argument(group) -> None:
    """--no-compile: the torch CPU bf16 path runs eager instead of inductor-compiled."""
    group.add_argument("--no-compile", action="store_true",
                       help="torch bf16 on CPU: run eager autocast instead of compiling with inductor (no compile "
                            "wait; slower, and its bf16 keypoints cost quality)")


def add_calibration_argument(group) -> None:
    """--calibration VIDEO: the frames that calibrate --precision int8."""
    group.add_argument("--calibration", metavar="VIDEO",
                       help="--precision int8: calibrate the quantization on this video's frames (default: the bundled "
                            "webcam clip driving the bundled avatar); the int8 graphs are cached per calibration")


def load_model_from_args(args: argparse.Namespace) -> LoadedModel:
    """The model named by --checkpoint/--config, or the bundled weights (see :func:`load_model`)."""
    return load_model(getattr(args, "checkpoint", None), getattr(args, "config", None))


def load_model(checkpoint: str | Path | None = None, config: str | None = None) -> LoadedModel:
    """``checkpoint`` (or the bundled weights) loaded with torch when it is installed; without torch (the light
    install) only the bundled weights load, onto the exported graphs shipped beside them."""
    from splinecam.engines.bundled import load_bundled, shipped_export_for, torch_available

    path = Path(checkpoint) if checkpoint else default_checkpoint()
    if not torch_available():
        if path.resolve() == default_checkpoint().resolve() and config is None:
            return load_bundled(path)
        raise CheckpointError(f"loading {path} needs PyTorch, which this light install does not have: "
                              f"pip install 'splinecam[torch]' (the bundled default model runs without it)")
    from splinecam.engines.tpsmm.checkpoint import load_checkpoint

    loaded = load_checkpoint(path, config)
    loaded.shipped_export = shipped_export_for(loaded)
    return loaded


def backend_from_args(args: argparse.Namespace, loaded: LoadedModel, sample: np.ndarray | None = None,
                      say=print) -> Backend:
    """The backend the flags ask for. ``--backend auto --precision auto`` on a CPU is measured
    (:mod:`splinecam.engines.backends.autotune`) on ``sample``, the (S,S,3) uint8 avatar crop it will
    animate; without a sample, the static policy of :func:`~splinecam.engines.backends.resolve_choice`."""
    options = BackendOptions(compile=not getattr(args, "no_compile", False),
                             calibration=getattr(args, "calibration", None))
    backend, device, precision = (getattr(args, name, "auto") for name in ("backend", "device", "precision"))
    return build_backend(loaded, backend, device, precision, options, sample, getattr(args, "retune", False),
                         say=lambda m: say(f"splinecam: {m}"))


def build_backend(loaded: LoadedModel, backend: str, device: str, precision: str, options: BackendOptions,
                  sample: np.ndarray | None = None, retune: bool = False, say=print) -> Backend:
    """``backend`` / ``device`` / ``precision`` as asked; ``auto`` × ``auto`` on a CPU with a ``sample`` (the
    (S,S,3) uint8 avatar crop) is measured (:mod:`splinecam.engines.backends.autotune`), what it picked
    said through ``say``; otherwise the static policy of :func:`~splinecam.engines.backends.resolve_choice`."""
    if sample is not None and backend == "auto" and precision == "auto" and \
            resolve_choice("auto", device, "auto")[1] == "cpu":
        from splinecam.engines.backends.autotune import choose

        choice = choose(loaded, sample, options, retune=retune, say=say)
        say(choice.explain())
        return create_backend(loaded, choice.engine, "cpu", choice.precision, options)
    return create_backend(loaded, backend, device, precision, options)


def avatar_sample(path: str | Path, size: int) -> np.ndarray | None:
    """The face crop (size×size uint8 RGB) of an avatar image, or of a folder's first image; None when
    there is none to read or no face in it (the caller reports those itself)."""
    from splinecam.engines.errors import SplinecamError
    from splinecam.engines.faces.detection import face_crop
    from splinecam.engines.media import picture_paths, read_image

    try:
        return face_crop(read_image(picture_paths(path, "--avatar")[0]), "the avatar", size)
    except SplinecamError:
        return None
