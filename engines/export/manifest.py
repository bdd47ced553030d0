"""The export manifest: what each exported graph takes and returns, and what it was made from.

``manifest.json`` sits beside the ONNX files. Backends address every tensor by the names it lists
(never by position) and refuse a directory whose manifest does not match the model they were given
(model hash) or this splinecam's manifest format.
"""

from __future__ import annotations

import hashlib
import json
from dataclasses import asdict, dataclass, field
from pathlib import Path

from splinecam.engines.errors import EngineCacheError

MANIFEST_NAME = "manifest.json"
MANIFEST_FORMAT = 1


@dataclass(frozen=True)
class TensorInfo:
    """One graph input or output: name, static shape, dtype name (``float32`` / ``float16``)."""

    name: str
    shape: tuple[int, ...]
    dtype: str


@dataclass
class GraphInfo:
    """One exported graph: file name (relative to the manifest), inputs and outputs in order, sha256."""

    name: str
    file: str
    inputs: list[TensorInfo]
    outputs: list[TensorInfo]
    sha256: str = ""

    def input(self, name: str) -> TensorInfo:
        return next(t for t in self.inputs if t.name == name)

    def output(self, name: str) -> TensorInfo:
        return next(t for t in self.outputs if t.name == name)


@dataclass
class Manifest:
    """Everything an engine builder or a backend needs to know about one export."""

    model_hash: str
    config_name: str
    image_size: int
    num_kp: int
    num_tps: int
    precision: str
    opset: int
    splinecam_version: str
    torch_version: str
    graphs: dict[str, GraphInfo] = field(default_factory=dict)
    format: int = MANIFEST_FORMAT

    def to_json(self) -> str:
        return json.dumps(asdict(self), indent=2)

    def write(self, directory: str | Path) -> Path:
        path = Path(directory) / MANIFEST_NAME
        tmp = path.with_name(path.name + ".tmp")
        tmp.write_text(self.to_json())
        tmp.replace(path)
        return path

    @classmethod
    def from_dict(cls, data: dict) -> "Manifest":
        graphs = {}
        for name, g in data.get("graphs", {}).items():
            graphs[name] = GraphInfo(
                name=g["name"], file=g["file"], sha256=g.get("sha256", ""),
                inputs=[TensorInfo(t["name"], tuple(t["shape"]), t["dtype"]) for t in g["inputs"]],
                outputs=[TensorInfo(t["name"], tuple(t["shape"]), t["dtype"]) for t in g["outputs"]])
        fields = {k: v for k, v in data.items() if k != "graphs"}
        return cls(graphs=graphs, **fields)

    @classmethod
    def read(cls, directory: str | Path) -> "Manifest":
        path = Path(directory) / MANIFEST_NAME
        try:
            data = json.loads(path.read_text())
            manifest = cls.from_dict(data)
        except FileNotFoundError:
            raise EngineCacheError(f"{path} does not exist: run 'splinecam export' to write the ONNX graphs") from None
        except (OSError, ValueError, KeyError, TypeError) as exc:
            raise EngineCacheError(f"{path} is not a splinecam export manifest ({exc}); export again") from None
        if manifest.format != MANIFEST_FORMAT:
            raise EngineCacheError(f"{path} has manifest format {manifest.format}, this splinecam reads "
                                   f"{MANIFEST_FORMAT}: export again")
        return manifest

    def graph_path(self, directory: str | Path, name: str) -> Path:
        if name not in self.graphs:
            raise EngineCacheError(f"export in {directory} has no {name!r} graph: export again")
        return Path(directory) / self.graphs[name].file


def file_sha256(path: str | Path) -> str:
    """sha256 of a file (graphs are listed in the manifest with theirs)."""
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for chunk in iter(lambda: f.read(1 << 20), b""):
            h.update(chunk)
    return h.hexdigest()


def graphs_digest(manifest: Manifest) -> str:
    """sha256 over an export's model hash and graph checksums: what an export derived from it is made from."""
    h = hashlib.sha256(manifest.model_hash.encode())
    for name in sorted(manifest.graphs):
        h.update(f"{name}:{manifest.graphs[name].sha256}".encode())
    return h.hexdigest()
