"""Checkpoint I/O shared by every model family (TPSMM, FOMM): safe reading, strict checks, safetensors.

Official checkpoints are pickles; they are opened with ``torch.load(weights_only=True)`` only (the
zip format and torch's legacy pre-1.6 format alike), so a file that would run code is refused instead
of executed. Modules load strictly by parameter name, whatever their float dtype; one-line errors name
the module, the key and the shapes. Our own weights are safetensors whose metadata carries the model
family and config, so they need no ``--config``.

The family-specific loaders (:mod:`splinecam.engines.tpsmm.checkpoint`, which also picks the family,
and :mod:`splinecam.engines.fomm.checkpoint`) build on these.
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
from splinecam.engines.validate import ValidationError, check_finite_tensors
from splinecam.engines.loaded_model import LoadedModel  # noqa: F401 (re-exported: what the loaders return)

FORMAT_VERSION = "1"
USE_INSTEAD = "use an official TPSMM / FOMM .pth.tar or a splinecam .safetensors"


def weights_hash(model: torch.nn.Module) -> str:
    """sha256 over every parameter and buffer (names, shapes and float32 bytes)."""
    h = hashlib.sha256()
    for name, tensor in sorted(model.state_dict().items()):
        t = tensor.detach().cpu()
        h.update(name.encode())
        h.update(str(tuple(t.shape)).encode())
        h.update((t.float() if t.is_floating_point() else t).contiguous().numpy().tobytes())
    return h.hexdigest()


def read_pickle_checkpoint(path: Path) -> dict:
    """An official ``.pth.tar`` as a dict, through ``torch.load(weights_only=True)`` only. A pickle that
    would run code is refused (and said so); bytes that are no pickle at all are 'not a PyTorch file'."""
    try:
        data = torch.load(path, map_location="cpu", weights_only=True)
    except pickle.UnpicklingError as exc:
        if not _is_pickle(path):  # random bytes, a truncated or other file: nothing that would run code
            raise CheckpointError(f"{path} is not a readable checkpoint (not a PyTorch file); {USE_INSTEAD}") from None
        said = [ln for ln in str(exc).splitlines() if "GLOBAL" in ln or "global" in ln]
        first = said[0].strip() if said else "it holds objects that are not plain weights"
        raise CheckpointError(
            f"refusing to load {path}: it is not a plain weights file (unpickling it would run code: {first[:160]}); "
            f"{USE_INSTEAD}"
        ) from None
    except Exception as exc:  # torch.load raises many kinds (KeyError, EOFError, RuntimeError …) on junk
        first = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
        raise CheckpointError(f"{path} is not a readable checkpoint ({first[:160]}); {USE_INSTEAD}") from None
    if not isinstance(data, dict):
        raise CheckpointError(f"{path} is not a checkpoint (it holds a {type(data).__name__}); {USE_INSTEAD}")
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


def read_safetensors(path: Path) -> tuple[dict[str, torch.Tensor], dict[str, str]]:
    """(flat tensors, metadata) of a safetensors file."""
    from safetensors import SafetensorError
    from safetensors.torch import load_file, safe_open

    try:
        with safe_open(str(path), framework="pt") as f:
            metadata = dict(f.metadata() or {})
        flat = load_file(str(path))
    except (SafetensorError, OSError, ValueError) as exc:
        raise CheckpointError(f"{path} is not a readable safetensors file ({str(exc)[:160]})") from None
    return flat, metadata


def stored_config(metadata: dict[str, str], path: Path | str) -> dict:
    """The config dict stored in our safetensors' metadata (official YAML layout); missing or unreadable:
    CheckpointError naming the file."""
    if "config" not in metadata:
        raise CheckpointError(f"{path} has no stored config: pass --config")
    try:
        data = yaml.safe_load(metadata["config"])
    except yaml.YAMLError as exc:
        raise CheckpointError(f"{path}: its stored config is not readable YAML ({str(exc).splitlines()[0]}); "
                              f"pass --config") from None
    if not isinstance(data, dict):
        raise CheckpointError(f"{path}: its stored config is not a mapping; pass --config")
    if metadata.get("family"):
        data.setdefault("family", metadata["family"])
    return data


def config_from_metadata(metadata: dict[str, str], path: Path | str):
    """The model config (a family's config type) stored in a safetensors file; invalid: CheckpointError."""
    from splinecam.engines.tpsmm.config import config_from_dict

    data = stored_config(metadata, path)
    try:
        return config_from_dict(data, Path(path).stem)
    except ConfigError as err:
        raise CheckpointError(f"{path}: its stored config is invalid ({err}); pass --config") from None


def metadata_info(metadata: dict[str, str], path: Path | str = "weights") -> dict:
    """Our safetensors' extra metadata, ``<key>_json`` values parsed as JSON; config and family dropped.

    A value that is not valid JSON, or a ``training`` record that is not a mapping (or whose
    ``landmark_indices`` are not face-mesh indices), is dropped with a warning: it describes the
    weights, the weights do not need it.
    """
    from splinecam.engines.tpsmm.config import LANDMARK_INDEX

    info: dict = {}
    for k, v in metadata.items():
        if k in ("config", "family"):
            continue
        if not k.endswith("_json"):
            info[k] = v
            continue
        try:
            info[k[: -len("_json")]] = json.loads(v)
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


def split_flat(flat: dict[str, torch.Tensor]) -> dict[str, dict[str, torch.Tensor]]:
    """``module.key`` tensors → {module: {key: tensor}}."""
    modules: dict[str, dict[str, torch.Tensor]] = {}
    for key, value in flat.items():
        module, _, rest = key.partition(".")
        modules.setdefault(module, {})[rest] = value
    return modules


def strip_module_prefix(sd: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    """Drop the ``module.`` prefix DataParallel puts on every key."""
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


def load_strict(module_name: str, module: torch.nn.Module, sd: dict, path: Path | str) -> None:
    """Check ``sd`` against ``module`` (:func:`check_state_dict`), then load it as float32, strictly."""
    sd = strip_module_prefix(sd)
    check_state_dict(module_name, module, sd, path)
    try:
        check_finite_tensors(sd, f"{path}: {module_name}")  # NaN weights would animate a black face
    except ValidationError as err:
        raise CheckpointError(str(err)) from None
    module.load_state_dict({k: (v.float() if v.is_floating_point() else v) for k, v in sd.items()}, strict=True)


def save_safetensors(model: torch.nn.Module, path: str | Path, extra_metadata: dict | None = None,
                     include_avd: bool = True) -> Path:
    """Write the model's weights, family and config as one safetensors file (atomically).

    ``model`` has ``submodules()`` (official module names) and ``config`` (``to_yaml_dict()``, ``family``).
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
                "family": getattr(model.config, "family", "tpsmm"),
                "config": yaml.safe_dump(model.config.to_yaml_dict(), sort_keys=False)}
    for key, value in (extra_metadata or {}).items():
        metadata[key if isinstance(value, str) else f"{key}_json"] = value if isinstance(value, str) else json.dumps(value)
    tmp = path.with_name(path.name + ".tmp")
    save_file(flat, str(tmp), metadata=metadata)
    tmp.replace(path)
    return path
