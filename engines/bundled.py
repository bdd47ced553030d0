"""The bundled default model and the exported graphs that ship beside it (the light install runs on them).

``engines/weights/<name>.safetensors`` holds the weights and config; ``engines/weights/<name>-graphs/``
holds its fp32 ONNX graphs and their ``manifest.json`` (written by ``splinecam export --checkpoint
<weights> --out <that folder>``; ``tests/test_bundled.py`` checks that they are an export of exactly
those weights — the manifest's model hash — and that ONNX Runtime runs them as torch runs the weights).

With torch installed, the shipped graphs of a loaded model are used instead of exporting it again when
the manifest's model hash is the loaded weights' (:func:`shipped_export_for`). Without torch (``pip install
splinecam``, no extras), :func:`load_bundled` reads the bundled weights' config and keys with safetensors'
NumPy API and takes the model hash from the shipped manifest: ONNX Runtime and OpenVINO then run the
shipped graphs, and nothing imports torch.
"""

from __future__ import annotations

import importlib.util
import json
from pathlib import Path

from splinecam.engines.errors import CheckpointError, EngineCacheError
from splinecam.engines.loaded_model import LoadedModel

WEIGHTS_DIR = Path(__file__).resolve().parent / "weights"


def torch_available() -> bool:
    """PyTorch is importable (the full install); the light install has none."""
    try:
        return importlib.util.find_spec("torch") is not None
    except ValueError:  # sys.modules["torch"] is None: imports of torch are blocked
        return False


def graphs_dir(weights: Path) -> Path:
    """Where the exported graphs of bundled weights ship: ``<weights stem>-graphs/`` beside them."""
    return weights.with_name(f"{weights.stem}-graphs")


def _shipped_manifest(weights: Path):
    from splinecam.engines.export.manifest import Manifest

    directory = graphs_dir(weights)
    if not (directory / "manifest.json").is_file():
        return directory, None
    try:
        return directory, Manifest.read(directory)
    except EngineCacheError:
        return directory, None


def shipped_export_for(loaded: LoadedModel) -> Path | None:
    """The shipped export directory of ``loaded`` when its manifest names these very weights, else None."""
    if loaded.path is None:
        return None
    directory, manifest = _shipped_manifest(Path(loaded.path))
    if manifest is None or manifest.model_hash != loaded.model_hash or manifest.precision != "fp32":
        return None
    return directory


def load_bundled(weights: Path) -> LoadedModel:
    """The bundled model without torch: config and keys from the safetensors file, graphs from the package."""
    from safetensors import SafetensorError, safe_open

    from splinecam.engines.tpsmm.config import config_from_dict

    directory, manifest = _shipped_manifest(weights)
    if manifest is None:
        raise CheckpointError(f"the graphs of the bundled model are missing from this install ({directory}): "
                              f"reinstall splinecam, or pip install 'splinecam[torch]' to export them")
    try:
        with safe_open(str(weights), framework="numpy") as f:
            metadata = dict(f.metadata() or {})
            keys = list(f.keys())
    except (SafetensorError, OSError, ValueError) as exc:
        raise CheckpointError(f"{weights} is not a readable safetensors file ({str(exc)[:160]})") from None
    import yaml

    config = config_from_dict(yaml.safe_load(metadata["config"]), weights.stem)
    info = {(k[: -len("_json")] if k.endswith("_json") else k): (json.loads(v) if k.endswith("_json") else v)
            for k, v in metadata.items() if k != "config"}
    modules = {k.partition(".")[0] for k in keys}
    return LoadedModel(None, config, weights, "avd_network" in modules, "bg_predictor" in modules,
                       manifest.model_hash, info, directory)
