"""Checkpoint I/O: official ``.pth.tar`` files (read) and our safetensors (read/write); the model family.

Official checkpoints are pickles; they are opened with ``torch.load(weights_only=True)`` only, so a
file that would run code is refused instead of executed. They load strictly by parameter name,
whatever their float dtype; optimizer state and epoch are ignored. Our own weights are
safetensors with the model family and config stored in the metadata, so they need no ``--config``.
The family-neutral pieces (strict checks, safetensors) are in
:mod:`splinecam.engines.checkpoint_io`.

:func:`load_checkpoint` is the one entry point for every model family: it recognises a FOMM checkpoint
(its ``generator`` / ``kp_detector`` layout, a FOMM ``--config``, or our safetensors' ``family``) and hands
it to :mod:`splinecam.engines.fomm.checkpoint`; everything else is TPSMM.
"""

from __future__ import annotations

import warnings
from pathlib import Path

from splinecam.engines.checkpoint_io import (  # noqa: F401 (re-exported: the names callers import from here)
    FORMAT_VERSION,
    check_state_dict,
    load_strict,
    config_from_metadata,
    metadata_info,
    read_pickle_checkpoint,
    read_safetensors,
    save_safetensors,
    split_flat,
    stored_config,
    strip_module_prefix,
    weights_hash,
)
from splinecam.engines.errors import CheckpointError
from splinecam.engines.loaded_model import LoadedModel  # noqa: F401 (re-exported: the type load_checkpoint returns)
from splinecam.engines.tpsmm.config import ModelConfig, builtin_config_names, load_config
from splinecam.engines.tpsmm.networks import TPSMM

REQUIRED_MODULES = ("kp_detector", "dense_motion_network", "inpainting_network")


def required_modules(config: ModelConfig) -> tuple[str, ...]:
    """The networks a checkpoint of ``config`` must hold (landmark configs have no keypoint detector)."""
    return tuple(m for m in REQUIRED_MODULES if not (m == "kp_detector" and config.landmark_keypoints))


def _load_modules(model: TPSMM, modules: dict[str, dict], path: Path | str) -> tuple[bool, bool]:
    for name in required_modules(model.config):
        if name not in modules:
            raise CheckpointError(f"{path}: no {name} weights in this checkpoint; it is not a complete TPSMM checkpoint")
    has_bg = model.bg_predictor is not None and "bg_predictor" in modules
    has_avd = "avd_network" in modules
    if not has_avd:  # no AVD weights: no AVD network (random weights would also change the model hash)
        model.avd_network = None
    for name, module in model.submodules().items():
        if name not in modules:
            continue
        load_strict(name, module, modules[name], path)
    if model.bg_predictor is not None and not has_bg:
        warnings.warn(f"{path}: no bg_predictor weights (trained before bg_start?): background motion is identity",
                      stacklevel=3)
    return has_avd, has_bg


def _infer_config(modules: dict[str, dict], path: Path) -> ModelConfig:
    """The built-in config whose shapes (and background module) match an official checkpoint.

    vox-256, taichi-256 and mgif-256 share shapes; vox-256 is tried first, and mgif-256 (no
    background predictor) only matches a checkpoint without one.
    """
    preferred = ["vox-256", "taichi-256", "mgif-256", "ted-384"]
    names = [n for n in preferred if n in builtin_config_names()]
    names += [n for n in builtin_config_names() if n not in names]
    for name in names:
        cfg = load_config(name)
        if cfg.bg != ("bg_predictor" in modules):
            continue
        model = TPSMM(cfg)
        try:
            for mod_name, module in model.submodules().items():
                if mod_name in modules:
                    check_state_dict(mod_name, module, strip_module_prefix(modules[mod_name]), path)
        except CheckpointError:
            continue
        warnings.warn(f"{path}: no --config given; its shapes match the built-in {name}", stacklevel=3)
        return cfg
    raise CheckpointError(f"{path}: its shapes match none of the built-in configs "
                          f"({', '.join(builtin_config_names())}); pass --config with its YAML")


def _family_mismatch(path: Path, fomm_file: bool, config) -> None:
    fomm_config = getattr(config, "family", "tpsmm") == "fomm"
    if fomm_file and not fomm_config:
        raise CheckpointError(f"{path} is a FOMM checkpoint (generator, kp_detector) but --config {config.name} is a "
                              f"TPSMM config: pass --config fomm-vox-256 (or the FOMM YAML it was trained with), "
                              f"or no --config")
    if fomm_config and not fomm_file:
        raise CheckpointError(f"{path} is not a FOMM checkpoint (no generator / kp_detector) but --config "
                              f"{config.name} is a FOMM config: pass the TPSMM --config it was trained with")


def load_checkpoint(path: str | Path, config: ModelConfig | str | None = None) -> LoadedModel:
    """Load an official TPSMM or FOMM ``.pth.tar`` or a splinecam ``.safetensors`` into an eval-mode float32 model.

    ``config``: a ModelConfig / FommConfig, a name / YAML path, or None (safetensors carry their own; for
    an official checkpoint the built-in config of its family whose shapes match is used).
    """
    path = Path(path).expanduser()
    if not path.is_file():
        raise CheckpointError(f"checkpoint {path} does not exist: give the path of a .pth.tar or .safetensors file")
    if isinstance(config, (str, Path)):
        config = load_config(config)
    metadata: dict = {}
    if path.suffix == ".safetensors":
        flat, metadata = read_safetensors(path)
        if config is None:
            config = config_from_metadata(metadata, path)
        modules = split_flat(flat)
    else:
        data = read_pickle_checkpoint(path)
        modules = {k: v for k, v in data.items() if isinstance(v, dict)}
    from splinecam.engines.fomm.checkpoint import is_fomm_checkpoint, load_fomm_modules

    fomm_file = is_fomm_checkpoint(modules)
    if config is not None:
        _family_mismatch(path, fomm_file, config)
    if fomm_file:
        return load_fomm_modules(modules, config, path, metadata_info(metadata, path))
    if not any(k in modules for k in REQUIRED_MODULES):
        keys = list(modules if path.suffix == ".safetensors" else data)[:5]
        raise CheckpointError(f"{path} is not a TPSMM checkpoint (top-level entries {keys}; expected "
                              f"{', '.join(REQUIRED_MODULES)}) nor a FOMM one (generator, kp_detector): "
                              f"use an official TPSMM / FOMM .pth.tar")
    modules = {k: v for k, v in modules.items() if k in TPSMM.MODULES}
    if config is None:
        config = _infer_config(modules, path)
    model = TPSMM(config)
    has_avd, has_bg = _load_modules(model, modules, path)
    model.eval()
    return LoadedModel(model, config, path, has_avd, has_bg, weights_hash(model), metadata_info(metadata, path))
