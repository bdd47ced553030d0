"""FOMM checkpoints: official ``.pth.tar`` files (``vox-cpk.pth.tar``, ``vox-adv-cpk.pth.tar``) and our
safetensors, exactly as for TPSMM (:mod:`splinecam.engines.checkpoint_io`).

An official FOMM checkpoint holds ``generator`` and ``kp_detector`` (loaded strictly by name), plus
``discriminator``, ``optimizer_*`` and ``epoch`` (ignored). The released files date from 2019 and may
be in torch's legacy (pre-zip) serialisation; ``torch.load(weights_only=True)`` reads both.
:func:`splinecam.engines.tpsmm.checkpoint.load_checkpoint` recognises a FOMM checkpoint (or a FOMM
``--config``) and calls :func:`load_fomm_modules`.
"""

from __future__ import annotations

import warnings
from pathlib import Path

import torch

from splinecam.engines.checkpoint_io import LoadedModel, check_state_dict, load_strict, strip_module_prefix, weights_hash
from splinecam.engines.errors import CheckpointError
from splinecam.engines.fomm.config import FommConfig, builtin_config_names, builtin_config_path, load_fomm_config
from splinecam.engines.fomm.networks import FOMM

REQUIRED_MODULES = FOMM.MODULES
IGNORED = ("discriminator", "optimizer_generator", "optimizer_kp_detector", "optimizer_discriminator", "epoch")


def is_fomm_checkpoint(modules: dict) -> bool:
    """Whether a checkpoint's top-level entries are FOMM's (a ``generator``, no TPSMM networks)."""
    return "generator" in modules and not any(k in modules for k in ("inpainting_network", "dense_motion_network"))


def _discriminator_uses_kp(modules: dict, num_kp: int) -> bool | None:
    """Whether the checkpoint's discriminator reads keypoint heatmaps (vox-adv: 3 + num_kp input
    channels in its first conv); None when it carries no discriminator to tell."""
    disc = modules.get("discriminator")
    if not isinstance(disc, dict):
        return None
    for key, value in strip_module_prefix(disc).items():
        if isinstance(value, torch.Tensor) and value.dim() == 4 and "down_blocks.0.conv.weight" in key:
            return int(value.shape[1]) > 3
    return None


def infer_config(modules: dict, path: Path) -> FommConfig:
    """The built-in FOMM config whose shapes match (fomm-vox-256 and fomm-vox-adv-256 share their networks;
    a keypoint-aware discriminator in the file picks the adv one)."""
    names = ["fomm-vox-256", "fomm-vox-adv-256"]
    if _discriminator_uses_kp(modules, 10):
        names.reverse()
    for name in names + [n for n in builtin_config_names() if n not in names]:
        cfg = load_fomm_config(builtin_config_path(name), name)
        model = FOMM(cfg)
        try:
            for mod_name, module in model.submodules().items():
                check_state_dict(mod_name, module, strip_module_prefix(modules[mod_name]), path)
        except CheckpointError:
            continue
        warnings.warn(f"{path}: no --config given; its shapes match the built-in {name}", stacklevel=4)
        return cfg
    raise CheckpointError(f"{path}: a FOMM checkpoint whose shapes match none of the built-in FOMM configs "
                          f"({', '.join(builtin_config_names())}); pass --config with its official YAML")


def load_fomm_modules(modules: dict, config: FommConfig | None, path: Path, metadata: dict | None = None) -> LoadedModel:
    """Build the FOMM networks and load ``modules`` ({module: state dict}) into them strictly, float32, eval."""
    for name in REQUIRED_MODULES:
        if not isinstance(modules.get(name), dict):
            raise CheckpointError(f"{path}: no {name} weights in this checkpoint; it is not a complete FOMM checkpoint "
                                  f"(expected {', '.join(REQUIRED_MODULES)})")
    if config is None:
        config = infer_config(modules, path)
    model = FOMM(config)
    for name, module in model.submodules().items():
        load_strict(name, module, modules[name], path)
    model.eval()
    return LoadedModel(model, config, path, has_avd=False, has_bg=False, model_hash=weights_hash(model),
                       metadata=dict(metadata or {}))
