"""Checkpoint I/O: official ``.pth.tar`` files (read) and our safetensors (read/write).

Official checkpoints are pickles; they are opened with ``torch.load(weights_only=True)`` only, so a
file that would run code is refused instead of executed. They load strictly by parameter name,
whatever their float dtype; optimizer state and epoch are ignored. Our own weights are
safetensors with the model config stored in the metadata, so they need no ``--config``.
"""

from __future__ import annotations

import hashlib
import io
import json
import pickle
import pickletools
import struct
import warnings
import zipfile
from pathlib import Path

import torch
import yaml

from splinecam.engines.errors import CheckpointError, ConfigError
from splinecam.engines.loaded_model import LoadedModel  # noqa: F401 (re-exported: the type load_checkpoint returns)
from splinecam.engines.tpsmm.config import (LANDMARK_INDEX, ModelConfig, builtin_config_names, config_from_dict,
                                            load_config)
from splinecam.engines.validate import ValidationError, check_finite_tensors
from splinecam.engines.tpsmm.networks import TPSMM

FORMAT_VERSION = "1"
REQUIRED_MODULES = ("kp_detector", "dense_motion_network", "inpainting_network")


def required_modules(config: ModelConfig) -> tuple[str, ...]:
    """The networks a checkpoint of ``config`` must hold (landmark configs have no keypoint detector)."""
    return tuple(m for m in REQUIRED_MODULES if not (m == "kp_detector" and config.landmark_keypoints))


def weights_hash(model: TPSMM) -> str:
    """sha256 over every parameter and buffer (names, shapes and float32 bytes)."""
    h = hashlib.sha256()
    for name, tensor in sorted(model.state_dict().items()):
        t = tensor.detach().cpu()
        h.update(name.encode())
        h.update(str(tuple(t.shape)).encode())
        h.update((t.float() if t.is_floating_point() else t).contiguous().numpy().tobytes())
    return h.hexdigest()


def _read_pickle_checkpoint(path: Path) -> dict:
    try:
        data = torch.load(path, map_location="cpu", weights_only=True)
    except pickle.UnpicklingError as exc:
        if not _is_pickle(path):  # random bytes, a truncated or other file: nothing that would run code
            raise CheckpointError(f"{path} is not a readable checkpoint (not a PyTorch file); use an official "
                                  f"TPSMM .pth.tar or a splinecam .safetensors") from None
        said = [ln for ln in str(exc).splitlines() if "GLOBAL" in ln or "global" in ln]
        first = said[0].strip() if said else "it holds objects that are not plain weights"
        raise CheckpointError(
            f"refusing to load {path}: it is not a plain weights file (unpickling it would run code: {first[:160]}); "
            f"use an official TPSMM .pth.tar or a splinecam .safetensors"
        ) from None
    except Exception as exc:  # torch.load raises many kinds (KeyError, EOFError, RuntimeError …) on junk
        first = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
        raise CheckpointError(f"{path} is not a readable checkpoint ({first[:160]}); "
                              f"use an official TPSMM .pth.tar or a splinecam .safetensors") from None
    if not isinstance(data, dict) or not any(k in data for k in REQUIRED_MODULES):
        keys = list(data)[:5] if isinstance(data, dict) else type(data).__name__
        raise CheckpointError(f"{path} is not a TPSMM checkpoint (top-level entries {keys}; expected "
                              f"{', '.join(REQUIRED_MODULES)}): use an official TPSMM .pth.tar")
    return data


def _is_pickle(path: Path) -> bool:
    """Whether ``path`` holds a pickle (plain, or a PyTorch zip's ``data.pkl``), read without running
    anything (``pickletools.genops`` only decodes opcodes). Random bytes are not one."""
    try:
        if zipfile.is_zipfile(path):
            with zipfile.ZipFile(path) as z:
                name = next((n for n in z.namelist() if n.endswith("data.pkl")), None)
                if name is None:
                    return False
                data = z.read(name)
        else:
            with open(path, "rb") as f:
                data = f.read(16 << 20)
        for _ in pickletools.genops(io.BytesIO(data)):
            pass
        return True
    except (ValueError, EOFError, OSError, KeyError, IndexError, UnicodeDecodeError, struct.error,
            zipfile.BadZipFile, pickle.UnpicklingError):
        return False


def _split_flat(flat: dict[str, torch.Tensor]) -> dict[str, dict[str, torch.Tensor]]:
    modules: dict[str, dict[str, torch.Tensor]] = {}
    for key, value in flat.items():
        module, _, rest = key.partition(".")
        modules.setdefault(module, {})[rest] = value
    return modules


def _strip_module_prefix(sd: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    if sd and all(k.startswith("module.") for k in sd):
        return {k[len("module."):]: v for k, v in sd.items()}
    return sd


def check_state_dict(module_name: str, module: torch.nn.Module, sd: dict, path: Path | str) -> None:
    """Raise one clear line for the first missing, unexpected or mis-shaped key."""
    expected = module.state_dict()
    for key, ref in expected.items():
        if key not in sd:
            raise CheckpointError(f"{path}: {module_name} is missing {key!r} (expected shape {tuple(ref.shape)}); "
                                  f"wrong checkpoint for this config? pass the matching --config")
        got = sd[key]
        if not isinstance(got, torch.Tensor):
            raise CheckpointError(f"{path}: {module_name}.{key} is not a tensor")
        if tuple(got.shape) != tuple(ref.shape):
            raise CheckpointError(f"{path}: {module_name}.{key} has shape {tuple(got.shape)}, the config expects "
                                  f"{tuple(ref.shape)}; pass the --config this checkpoint was trained with")
    for key in sd:
        if key not in expected:
            raise CheckpointError(f"{path}: {module_name} has unexpected key {key!r} "
                                  f"({tuple(sd[key].shape) if isinstance(sd[key], torch.Tensor) else '?'}); "
                                  f"wrong checkpoint for this config? pass the matching --config")


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
        sd = _strip_module_prefix(modules[name])
        check_state_dict(name, module, sd, path)
        try:
            check_finite_tensors(sd, f"{path}: {name}")  # NaN weights would animate a black face
        except ValidationError as err:
            raise CheckpointError(str(err)) from None
        sd = {k: (v.float() if v.is_floating_point() else v) for k, v in sd.items()}
        module.load_state_dict(sd, strict=True)
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
                    check_state_dict(mod_name, module, _strip_module_prefix(modules[mod_name]), path)
        except CheckpointError:
            continue
        warnings.warn(f"{path}: no --config given; its shapes match the built-in {name}", stacklevel=3)
        return cfg
    raise CheckpointError(f"{path}: its shapes match none of the built-in configs "
                          f"({', '.join(builtin_config_names())}); pass --config with its YAML")


def load_checkpoint(path: str | Path, config: ModelConfig | str | None = None) -> LoadedModel:
    """Load an official ``.pth.tar`` or a splinecam ``.safetensors`` into an eval-mode float32 model.

    ``config``: a ModelConfig, a name / YAML path, or None (safetensors carry their own; for an
    official checkpoint the built-in config whose shapes match is used).
    """
    path = Path(path).expanduser()
    if not path.is_file():
        raise CheckpointError(f"checkpoint {path} does not exist: give the path of a .pth.tar or .safetensors file")
    if isinstance(config, (str, Path)):
        config = load_config(config)
    metadata: dict = {}
    if path.suffix == ".safetensors":
        from safetensors import SafetensorError
        from safetensors.torch import load_file, safe_open

        try:
            with safe_open(str(path), framework="pt") as f:
                metadata = dict(f.metadata() or {})
            flat = load_file(str(path))
        except (SafetensorError, OSError, ValueError) as exc:
            raise CheckpointError(f"{path} is not a readable safetensors file ({str(exc)[:160]})") from None
        if config is None:
            config = config_from_metadata(metadata, path)
        modules = _split_flat(flat)
    else:
        data = _read_pickle_checkpoint(path)
        modules = {k: v for k, v in data.items() if isinstance(v, dict) and k in TPSMM.MODULES}
        if config is None:
            config = _infer_config(modules, path)
    model = TPSMM(config)
    has_avd, has_bg = _load_modules(model, modules, path)
    model.eval()
    return LoadedModel(model, config, path, has_avd, has_bg, weights_hash(model), metadata_info(metadata, path))


def config_from_metadata(metadata: dict, path: Path | str) -> ModelConfig:
    """The model config stored in a splinecam safetensors file's metadata (YAML text). Missing,
    unreadable or invalid: CheckpointError naming the file."""
    if "config" not in metadata:
        raise CheckpointError(f"{path} has no stored config: pass --config")
    try:
        data = yaml.safe_load(metadata["config"])
    except yaml.YAMLError as exc:
        raise CheckpointError(f"{path}: its stored config is not readable YAML ({str(exc).splitlines()[0]}); "
                              f"pass --config") from None
    try:
        return config_from_dict(data, Path(path).stem)
    except ConfigError as err:
        raise CheckpointError(f"{path}: its stored config is invalid ({err}); pass --config") from None


def metadata_info(metadata: dict, path: Path | str) -> dict:
    """The extra metadata of a safetensors file: ``<key>_json`` values parsed as JSON. A value that is
    not valid JSON, or a ``training`` record that is not a mapping (or whose ``landmark_indices`` are not
    face-mesh indices), is dropped with a warning: it describes the weights, the weights do not need it."""
    info: dict = {}
    for k, v in metadata.items():
        if k == "config":
            continue
        if not k.endswith("_json"):
            info[k] = v
            continue
        key = k[: -len("_json")]
        try:
            info[key] = json.loads(v)
        except ValueError as exc:
            warnings.warn(f"{path}: ignoring its metadata {k} (not JSON: {exc})", stacklevel=3)
    training = info.get("training")
    if training is not None and not isinstance(training, dict):
        warnings.warn(f"{path}: ignoring its metadata training_json (not a mapping)", stacklevel=3)
        info.pop("training")
    elif isinstance(training, dict) and training.get("landmark_indices") is not None:
        try:
            idx = training["landmark_indices"]
            if not isinstance(idx, list):
                raise ValidationError("landmark_indices must be a list")
            training["landmark_indices"] = [LANDMARK_INDEX.check(i, "landmark index") for i in idx]
        except ValidationError as err:
            warnings.warn(f"{path}: ignoring its recorded landmark_indices ({err})", stacklevel=3)
            training["landmark_indices"] = None
    return info


def save_safetensors(model: TPSMM, path: str | Path, extra_metadata: dict | None = None,
                     include_avd: bool = True) -> Path:
    """Write the model's weights and config as one safetensors file (atomically).

    ``extra_metadata`` values that are not strings are stored as JSON under ``<key>_json``.
    """
    from safetensors.torch import save_file

    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    flat: dict[str, torch.Tensor] = {}
    for name, module in model.submodules().items():
        if name == "avd_network" and not include_avd:
            continue
        for key, value in module.state_dict().items():
            flat[f"{name}.{key}"] = value.detach().cpu().contiguous()
    metadata = {"format": "splinecam", "format_version": FORMAT_VERSION,
                "config": yaml.safe_dump(model.config.to_yaml_dict(), sort_keys=False)}
    for key, value in (extra_metadata or {}).items():
        metadata[key if isinstance(value, str) else f"{key}_json"] = value if isinstance(value, str) else json.dumps(value)
    tmp = path.with_name(path.name + ".tmp")
    save_file(flat, str(tmp), metadata=metadata)
    tmp.replace(path)
    return path
