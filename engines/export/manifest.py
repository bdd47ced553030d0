"""The export manifest: what each exported graph takes and returns, and what it was made from.

``manifest.json`` sits beside the ONNX files. Backends address every tensor by the names it lists
(never by position) and refuse a directory whose manifest does not match the model they were given
(model hash) or this splinecam's manifest format, and check each graph file against the sha256 the
manifest records (:meth:`Manifest.verify`).
"""

from __future__ import annotations

import hashlib
import json
from dataclasses import asdict, dataclass, field
from pathlib import Path

from splinecam.engines.cache_store import file_sha256  # noqa: F401 (one sha256 for every file we check)
from splinecam.engines.errors import EngineCacheError

MANIFEST_NAME = "manifest.json"
MANIFEST_FORMAT = 1


def _typed(value, kind: type, what: str):
    if not isinstance(value, kind) or isinstance(value, bool):
        raise TypeError(f"{what} must be {kind.__name__}, got {value!r:.40}")
    return value


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
    family: str = "tpsmm"  # the model family (engines/family.py); num_tps is 0 for FOMM

    def to_json(self) -> str:
        return json.dumps(asdict(self), indent=2)

    def write(self, directory: str | Path) -> Path:
        from splinecam.engines.outputs import write_text_atomic

        return write_text_atomic(Path(directory) / MANIFEST_NAME, self.to_json(), "export manifest")

    @classmethod
    def from_dict(cls, data: dict) -> "Manifest":
        """The manifest from its JSON; TypeError / ValueError for anything not of the manifest's types."""
        if not isinstance(data, dict) or not isinstance(data.get("graphs", {}), dict):
            raise TypeError("not a JSON object with a 'graphs' mapping")

        def tensor(t) -> TensorInfo:
            if not isinstance(t, dict) or not isinstance(t.get("shape"), list):
                raise TypeError(f"tensor entry {t!r:.60}")
            shape = tuple(_typed(d, int, "shape") for d in t["shape"])
            return TensorInfo(_typed(t["name"], str, "tensor name"), shape, _typed(t["dtype"], str, "dtype"))

        graphs = {}
        for name, g in data.get("graphs", {}).items():
            if not isinstance(g, dict) or not isinstance(g.get("inputs"), list) or not isinstance(g.get("outputs"), list):
                raise TypeError(f"graph {name!r} entry")
            file = _typed(g["file"], str, "file")
            if not file or Path(file).name != file:
                raise ValueError(f"graph {name!r}: file {file!r} is not a file name")
            graphs[name] = GraphInfo(
                name=_typed(g["name"], str, "name"), file=file, sha256=_typed(g.get("sha256", ""), str, "sha256"),
                inputs=[tensor(t) for t in g["inputs"]], outputs=[tensor(t) for t in g["outputs"]])
        fields = {k: v for k, v in data.items() if k != "graphs"}  # older manifests have no family: tpsmm
        for k in ("model_hash", "config_name", "precision", "splinecam_version", "torch_version", "family"):
            _typed(fields.get(k, ""), str, k)
        for k in ("image_size", "num_kp", "num_tps", "opset", "format"):
            if k in fields:
                _typed(fields[k], int, k)
        return cls(graphs=graphs, **fields)

    @classmethod
    def read(cls, directory: str | Path) -> "Manifest":
        path = Path(directory) / MANIFEST_NAME
        try:
            data = json.loads(path.read_text())
            manifest = cls.from_dict(data)
        except FileNotFoundError:
            raise EngineCacheError(f"{path} does not exist: run 'splinecam export' to write the ONNX graphs") from None
        except (OSError, ValueError, KeyError, TypeError, AttributeError) as exc:
            raise EngineCacheError(f"{path} is not a splinecam export manifest ({exc}); export again") from None
        if manifest.format != MANIFEST_FORMAT:
            raise EngineCacheError(f"{path} has manifest format {manifest.format}, this splinecam reads "
                                   f"{MANIFEST_FORMAT}: export again")
        return manifest

    def verify(self, directory: str | Path, required: tuple[str, ...] = (), check_hashes: bool = True) -> None:
        """Raise EngineCacheError unless every ``required`` graph is listed and every listed graph file
        exists and (``check_hashes``) matches its sha256."""
        for name in required:
            if name not in self.graphs:
                raise EngineCacheError(f"export in {directory} has no {name!r} graph: export again")
        for name, g in self.graphs.items():
            path = Path(directory) / g.file
            if not path.is_file():
                raise EngineCacheError(f"{path} is missing from the export in {directory}: export again")
            if check_hashes and g.sha256 and file_sha256(path) != g.sha256:
                raise EngineCacheError(f"{path} does not match its manifest's sha256 (truncated or overwritten): "
                                       f"export again")

    def graph_path(self, directory: str | Path, name: str) -> Path:
        if name not in self.graphs:
            raise EngineCacheError(f"export in {directory} has no {name!r} graph: export again")
        return Path(directory) / self.graphs[name].file


def graphs_digest(manifest: Manifest) -> str:
    """sha256 over an export's model hash and graph checksums: what an export derived from it is made from."""
    h = hashlib.sha256(manifest.model_hash.encode())
    for name in sorted(manifest.graphs):
        h.update(f"{name}:{manifest.graphs[name].sha256}".encode())
    return h.hexdigest()
