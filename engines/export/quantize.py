"""int8: post-training static quantization of the exported graphs (ONNX QDQ), calibrated on real frames.

    calibration = Calibration.bundled()                       # or Calibration.from_video("me.mp4")
    feeds = calibration_feeds(fp32_backend, calibration)       # the generator's real per-frame inputs
    manifest = quantize_export(fp32_dir, out_dir, feeds, calibration)

What is quantized: the convolutions of the per-frame networks — the ``generator`` (dense motion +
inpainting decoder) and, with ``graphs=("generator", "keypoints")``, the keypoint detector — in the QDQ
format (``QuantizeLinear → DequantizeLinear`` around each Conv: int8 per-channel symmetric weights,
uint8 asymmetric activations, MinMax ranges from calibration). Signed int8 activations were tried on
lite-256: ONNX Runtime then left 9 of 33 convolutions unfused (float) and OpenVINO lost 16 dB; with
uint8 activations both run all 33 in int8 at ~46 dB against fp32. Nothing else: the TPS grids, Gaussians, ``GridSample`` warps,
softmaxes and every other float32 island of :mod:`splinecam.engines.export.graphs` stay float32, and
so do the source encoder (once per avatar) and the background graph. A QDQ graph uses only ONNX
operators (``QuantizeLinear`` / ``DequantizeLinear`` are in TensorRT's table too), so one quantized
export serves ONNX Runtime (which fuses each ``DQ → Conv → Q`` into ``QLinearConv``) and OpenVINO
(which turns the pairs into FakeQuantize and runs int8 convolutions).

Calibration runs the real per-frame inputs through the fp32 model runner: the cached source tensors of
an avatar (``Backend.prepare_source``) and, per driving frame, the keypoints, their relative
normalisation and the host TPS step (``generator_feeds``) — exactly what the live loop feeds the
generator. The frames exist on every user's machine: the bundled clip ``live/assets/webcam.mp4``
driving the bundled avatar ``live/assets/mona.jpg`` (and the clip's own first frame as a second
avatar), or the user's own video (``--calibration VIDEO``). The bundled clip's calibration frames are
taken from its second part (from frame :data:`BUNDLED_FIRST_FRAME` on), so the bench, which drives its
first frames, does not measure int8 on the frames it was calibrated on.

Quantized exports are cached like every export (:func:`int8_export_dir`: model hash, the fp32 graphs they
come from, calibration key, opset, quantizer fingerprint); :func:`write_int8_export` is the one function
that writes one.
"""

from __future__ import annotations

import hashlib
import json
import shutil
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Callable

import numpy as np

from splinecam.engines.errors import SplinecamError

if TYPE_CHECKING:
    from splinecam.engines.backends.base import Backend
    from splinecam.engines.export.manifest import Manifest

class QuantizationError(SplinecamError):
    """An int8 export cannot be made (not from fp32 graphs, a quantized graph failing the export checks …)."""


#: bumped when what a calibration feeds, or how it quantizes, changes (part of the cache key)
CALIBRATION_FORMAT = 1
BUNDLED_FIRST_FRAME = 60
DEFAULT_FRAMES = 32
#: the per-frame graphs that may be quantized, and the ones by default
QUANTIZABLE = ("generator", "keypoints")
DEFAULT_GRAPHS = ("generator",)
QUANTIZED_OPS = ("Conv",)
INT8_RECORD = "int8.json"

#: operators of ONNX Runtime's optimised graph that run int8 arithmetic (the QDQ fusions of the CPU EP)
ORT_INT8_OPS = frozenset({"QLinearConv", "ConvInteger", "QLinearMatMul", "MatMulInteger", "QGemm",
                          "MatMulIntegerToFloat", "DynamicQuantizeMatMul", "QLinearAdd", "QLinearMul",
                          "QLinearConcat", "QLinearSigmoid", "QLinearAveragePool", "QLinearGlobalAveragePool",
                          "QLinearLeakyRelu", "QLinearSoftmax", "QLinearReduceMean", "NhwcQLinearConv"})


def bundled_assets() -> Path:
    """The demo assets shipped with splinecam (``splinecam/live/assets``; a data path, not an import)."""
    return Path(__file__).resolve().parents[2] / "live" / "assets"


def _file_sha256(path: Path) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for chunk in iter(lambda: f.read(1 << 20), b""):
            h.update(chunk)
    return h.hexdigest()


@dataclass(frozen=True)
class Calibration:
    """Where the calibration frames come from.

    video: the driving clip; avatar: the source picture; first_frame: the clip's first frame used;
    frames: how many driving frames (spread evenly over the rest of the clip); graphs: which graphs are
    quantized (:data:`QUANTIZABLE`).
    """

    video: Path
    avatar: Path
    first_frame: int = 0
    frames: int = DEFAULT_FRAMES
    graphs: tuple[str, ...] = DEFAULT_GRAPHS

    @classmethod
    def bundled(cls, **kwargs) -> "Calibration":
        assets = bundled_assets()
        return cls(assets / "webcam.mp4", assets / "mona.jpg", first_frame=BUNDLED_FIRST_FRAME, **kwargs)

    @classmethod
    def from_video(cls, video: str | Path | None, avatar: str | Path | None = None, **kwargs) -> "Calibration":
        """``--calibration VIDEO`` (None: the bundled clip); the avatar defaults to the bundled one."""
        if video is None:
            return cls.bundled(**kwargs)
        path = Path(video)
        if not path.is_file():
            raise SplinecamError(f"--calibration {path}: no such video")
        return cls(path, Path(avatar) if avatar else bundled_assets() / "mona.jpg", **kwargs)

    def key(self) -> str:
        """What the calibration depends on: the clip's and avatar's bytes and the settings (a digest)."""
        unknown = sorted(set(self.graphs) - set(QUANTIZABLE))
        if unknown:
            raise SplinecamError(f"cannot quantize {unknown}: int8 graphs are {', '.join(QUANTIZABLE)}")
        h = hashlib.sha256(json.dumps({"format": CALIBRATION_FORMAT, "first": self.first_frame,
                                       "frames": self.frames, "graphs": sorted(self.graphs)}).encode())
        for p in (self.video, self.avatar):
            if not p.is_file():
                raise SplinecamError(f"calibration file {p} is missing (reinstall splinecam, or pass --calibration "
                                     f"VIDEO)")
            h.update(_file_sha256(p).encode())
        return h.hexdigest()

    def describe(self) -> str:
        return f"{self.video.name} frames {self.first_frame}+ ({self.frames}), avatar {self.avatar.name}"


# ----------------------------------------------------------------------------- calibration inputs


def _calibration_frames(calibration: Calibration, size: int) -> list[np.ndarray]:
    """The driving frames, face-cropped like the live loop (one crop from the first frame's face; centre
    square if none is found), resized to size×size uint8 RGB."""
    from splinecam.engines.faces.detection import find_face
    from splinecam.engines.faces.geometry import crop_box_for_face, crop_image
    from splinecam.engines.media import VideoReader

    frames = VideoReader(calibration.video).read_all()[calibration.first_frame:]
    if not frames:
        raise SplinecamError(f"{calibration.video}: no frames from frame {calibration.first_frame} on")
    picks = np.linspace(0, len(frames) - 1, min(calibration.frames, len(frames))).round().astype(int)
    chosen = [frames[i] for i in picks]
    try:
        box = crop_box_for_face(find_face(chosen[0], str(calibration.video)))
        return [crop_image(f, box, size) for f in chosen]
    except SplinecamError:
        return [_centre_square(f, size) for f in chosen]


def _centre_square(image: np.ndarray, size: int) -> np.ndarray:
    import cv2

    h, w = image.shape[:2]
    s = min(h, w)
    sq = image[(h - s) // 2:(h - s) // 2 + s, (w - s) // 2:(w - s) // 2 + s]
    return cv2.resize(sq, (size, size), interpolation=cv2.INTER_AREA if s > size else cv2.INTER_CUBIC)


def _avatar_image(calibration: Calibration, size: int) -> np.ndarray:
    from splinecam.engines.faces.detection import face_crop
    from splinecam.engines.media import read_image

    image = read_image(calibration.avatar)
    try:
        return face_crop(image, str(calibration.avatar), size)
    except SplinecamError:
        return _centre_square(image, size)


def calibration_feeds(backend: "Backend", calibration: Calibration) -> dict[str, list[dict[str, np.ndarray]]]:
    """Graph name → the list of feed dicts calibration runs, made by the fp32 model runner ``backend``.

    generator: for each avatar (the calibration avatar, then the clip's first frame) and each driving frame,
    the avatar's cached source tensors + the frame's ``generator_feeds`` (keypoints normalised relative to
    the first driving frame, TPS solved on the host), as the live loop feeds them; keypoints: the frames.
    """
    from splinecam.engines.backends.base import image_to_nchw
    from splinecam.engines.tpsmm.geometry import relative_keypoints, relative_scale
    from splinecam.engines.tpsmm.host import generator_feeds

    size = backend.size
    frames = _calibration_frames(calibration, size)
    kps = [backend.keypoints(f) for f in frames]
    avatars = [_avatar_image(calibration, size), frames[0]]
    generator = []
    for i, avatar in enumerate(avatars):
        state = backend.prepare_source(avatar)
        scale, ok = relative_scale(state.kp, kps[0])
        scale = scale if ok else 1.0
        # the calibration avatar sees every frame; the clip's own first frame every fourth one
        for kp in (kps if i == 0 else kps[::4]):
            kp_norm = relative_keypoints(state.kp, kp, kps[0], scale).astype(np.float32)
            feeds = generator_feeds(backend.config, kp_norm, state.kp)
            generator.append({**{k: np.asarray(v, np.float32) for k, v in state.tensors.items()}, **feeds})
    return {"generator": generator, "keypoints": [{"image": image_to_nchw(f)} for f in frames]}


# ----------------------------------------------------------------------------- quantization


class _Reader:
    """onnxruntime.quantization's CalibrationDataReader over a list of feed dicts (only the graph's inputs)."""

    def __init__(self, feeds: list[dict[str, np.ndarray]], inputs: set[str]):
        self._it = iter([{k: v for k, v in f.items() if k in inputs} for f in feeds])

    def get_next(self):
        return next(self._it, None)


#: how activations are quantized (see quantize_graph)
ACTIVATIONS = {"type": "uint8", "symmetric": False}


def quantize_graph(src: str | Path, dst: str | Path, feeds: list[dict[str, np.ndarray]],
                   op_types: tuple[str, ...] = QUANTIZED_OPS) -> dict[str, int]:
    """Quantize one fp32 graph (QDQ, per-channel int8 weights, int8 activations) from calibration feeds.

    Returns the QDQ node counts of the result (QuantizeLinear / DequantizeLinear / quantized ops).
    """
    import onnx
    from onnxruntime.quantization import CalibrationMethod, QuantFormat, QuantType, quantize_static

    if not feeds:
        raise SplinecamError(f"no calibration inputs for {Path(src).name}")
    model = onnx.load(str(src))
    inputs = {i.name for i in model.graph.input}
    dst = Path(dst)
    tmp = dst.with_name(dst.name + ".tmp.onnx")
    # ranges merged every few samples (memory); onnxruntime then fails on a count that is a multiple of it
    chunk = next(n for n in (4, 3, 5, 7) if len(feeds) % n)
    quantize_static(str(src), str(tmp), _Reader(feeds, inputs), quant_format=QuantFormat.QDQ,
                    op_types_to_quantize=list(op_types), per_channel=True, reduce_range=False,
                    activation_type=QuantType.QInt8 if ACTIVATIONS["type"] == "int8" else QuantType.QUInt8,
                    weight_type=QuantType.QInt8,
                    calibrate_method=CalibrationMethod.MinMax,
                    extra_options={"ActivationSymmetric": ACTIVATIONS["symmetric"], "WeightSymmetric": True,
                                   "CalibMaxIntermediateOutputs": chunk})
    tmp.replace(dst)
    quantized = onnx.load(str(dst))
    counts: dict[str, int] = {}
    for node in quantized.graph.node:
        if node.op_type in ("QuantizeLinear", "DequantizeLinear") or node.op_type in op_types:
            counts[node.op_type] = counts.get(node.op_type, 0) + 1
    return counts


def quantizer_fingerprint() -> str:
    """sha256 of this module and the quantizer's version: part of the int8 cache key."""
    import onnxruntime

    h = hashlib.sha256(onnxruntime.__version__.encode())
    h.update(Path(__file__).read_bytes())
    return h.hexdigest()


def int8_export_dir(fp32_manifest, calibration_key: str, root: Path | None = None) -> Path:
    """The cached int8 export of one fp32 export for one calibration: keyed by the model hash, the fp32 graphs
    it was quantized from, the calibration and the quantizer (this module, onnxruntime's version)."""
    from splinecam.engines.engine_cache import cache_root
    from splinecam.engines.export.manifest import graphs_digest

    name = (f"{fp32_manifest.model_hash[:16]}-int8-{calibration_key[:12]}-from-{graphs_digest(fp32_manifest)[:12]}"
            f"-opset{fp32_manifest.opset}-q{quantizer_fingerprint()[:8]}")
    return (root or cache_root()) / "onnx" / name


@dataclass
class Int8Record:
    """``int8.json`` beside an int8 export's manifest: what was quantized, from which frames."""

    calibration: str
    calibration_key: str
    quantized: dict[str, dict[str, int]] = field(default_factory=dict)
    samples: dict[str, int] = field(default_factory=dict)
    onnxruntime_version: str = ""
    seconds: float = 0.0

    @classmethod
    def read(cls, directory: str | Path) -> "Int8Record":
        from splinecam.engines.errors import EngineCacheError

        path = Path(directory) / INT8_RECORD
        try:
            return cls(**json.loads(path.read_text()))
        except (OSError, ValueError, TypeError) as exc:
            raise EngineCacheError(f"{path} is not a splinecam int8 record ({exc}): quantize again") from None


def write_int8_export(fp32_dir: str | Path, out_dir: str | Path, feeds: dict[str, list[dict[str, np.ndarray]]],
                      calibration: Calibration, progress: Callable[[str], None] | None = None) -> "Manifest":
    """Write an int8 export: the fp32 export's graphs, the per-frame ones quantized (``calibration.graphs``).

    The one function that writes an int8 export (its manifest last: a directory with a manifest is
    complete). Returns the manifest (precision ``int8``); ``int8.json`` records the calibration.
    """
    import onnxruntime

    from splinecam.engines.export.graph_checks import inspect_graph
    from splinecam.engines.export.manifest import MANIFEST_NAME, GraphInfo, Manifest, file_sha256

    say = progress or (lambda _m: None)
    src, out = Path(fp32_dir), Path(out_dir)
    manifest = Manifest.read(src)
    if manifest.precision != "fp32":
        raise QuantizationError(f"{src} holds {manifest.precision} graphs: int8 graphs are quantized from fp32 ones")
    out.mkdir(parents=True, exist_ok=True)
    for stale in (out / MANIFEST_NAME, out / INT8_RECORD):
        if stale.exists():
            stale.unlink()
    t0 = time.perf_counter()
    record = Int8Record(calibration.describe(), calibration.key(), onnxruntime_version=onnxruntime.__version__)
    result = Manifest(**{**manifest.__dict__, "precision": "int8", "graphs": {}})
    for name, info in manifest.graphs.items():
        path = out / info.file
        if name in calibration.graphs:
            samples = feeds.get(name, [])
            say(f"quantizing {name} to int8 ({len(samples)} calibration inputs: {calibration.describe()}) …")
            t1 = time.perf_counter()
            record.quantized[name] = quantize_graph(src / info.file, path, samples)
            record.samples[name] = len(samples)
            check = inspect_graph(path)
            if not check.ok:
                raise QuantizationError(f"{path}: {check.problems[0]}")
            say(f"      {name}.onnx: {record.quantized[name]}, {time.perf_counter() - t1:.1f} s")
        else:
            shutil.copyfile(src / info.file, path)
        result.graphs[name] = GraphInfo(name=name, file=info.file, inputs=list(info.inputs),
                                        outputs=list(info.outputs), sha256=file_sha256(path))
    record.seconds = round(time.perf_counter() - t0, 1)
    (out / INT8_RECORD).write_text(json.dumps(asdict(record), indent=2))
    result.write(out)
    return result


# ----------------------------------------------------------------------------- did int8 run?


def count_ort_int8(optimised_model: str | Path) -> dict[str, int]:
    """The int8 operators of an ONNX Runtime *optimised* graph (``SessionOptions.optimized_model_filepath``:
    what the session runs): op type → count, plus ``"float Conv"``: the convolutions left in floating point."""
    import onnx

    model = onnx.load(str(optimised_model), load_external_data=False)
    counts: dict[str, int] = {}
    for node in model.graph.node:
        if node.op_type in ORT_INT8_OPS:
            counts[node.op_type] = counts.get(node.op_type, 0) + 1
        elif node.op_type in ("Conv", "FusedConv") or node.op_type.startswith("NchwcConv"):
            counts["float Conv"] = counts.get("float Conv", 0) + 1
    return counts


def openvino_int8_kernels(compiled_model) -> dict[str, int]:
    """Runtime precisions of the convolutions in OpenVINO's execution graph (``get_runtime_model``):
    ``"int8 Convolution"`` counts those that run on I8/U8 data, ``"float Convolution"`` the others."""
    def text(info, key: str) -> str:
        return info[key].astype(str) if key in info else ""

    counts = {"int8 Convolution": 0, "float Convolution": 0}
    for op in compiled_model.get_runtime_model().get_ordered_ops():
        info = op.get_rt_info()
        if "Convolution" not in text(info, "layerType"):
            continue
        kind = "int8" if text(info, "runtimePrecision").upper() in ("I8", "U8") else "float"
        counts[f"{kind} Convolution"] += 1
    return counts
