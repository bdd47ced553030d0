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
import json
import pickle
from pathlib import Path

import torch
import yaml

from splinecam.engines.errors import CheckpointError
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
    """An official ``.pth.tar`` as a dict, through ``torch.load(weights_only=True)`` only."""
    try:
        data = torch.load(path, map_location="cpu", weights_only=True)
    except pickle.UnpicklingError as exc:
        first = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
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


def stored_config(metadata: dict[str, str], path: Path) -> dict:
    """The config dict stored in our safetensors' metadata (official YAML layout)."""
    if "config" not in metadata:
        raise CheckpointError(f"{path} has no stored config: pass --config")
    data = yaml.safe_load(metadata["config"])
    if metadata.get("family") and isinstance(data, dict):
        data.setdefault("family", metadata["family"])
    return data


def metadata_info(metadata: dict[str, str]) -> dict:
    """Our safetensors' extra metadata, JSON fields (``<key>_json``) decoded; config and format fields dropped."""
    return {(k[: -len("_json")] if k.endswith("_json") else k): (json.loads(v) if k.endswith("_json") else v)
            for k, v in metadata.items() if k not in ("config", "family")}


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
