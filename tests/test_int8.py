"""int8: the generator quantized (QDQ) on real calibration frames, run by ONNX Runtime and OpenVINO with int8
kernels for real — a graph that would run in floating point is refused, not run and called int8 — and its
pictures against fp32 on real motion (frames of the bundled clip that calibration did not see)."""

from __future__ import annotations

import dataclasses
import json
import shutil

import numpy as np
import onnx
import pytest

from splinecam.engines.backends import BackendOptions, create_backend
from splinecam.engines.backends.options import OrtOptions
from splinecam.engines.errors import BackendUnavailableError, SplinecamError
from splinecam.engines.export.quantize import (INT8_RECORD, Calibration, calibration_feeds, int8_export_dir,
                                               _avatar_image, _calibration_frames)
from splinecam.engines.tpsmm.geometry import relative_keypoints, relative_scale

#: the floor for int8 against fp32 on golden-small; the ≥ 35 dB that ``auto`` asks is measured by the bench
INT8_MIN_PSNR = 30.0


@pytest.fixture(scope="module")
def int8_cache(tmp_path_factory):
    """Exports and int8 graphs of this module in a cache of their own."""
    with pytest.MonkeyPatch.context() as mp:
        root = tmp_path_factory.mktemp("int8-cache")
        mp.setenv("SPLINECAM_CACHE", str(root))
        yield root


@pytest.fixture(scope="module")
def ort_int8(int8_cache, golden_model):
    return create_backend(golden_model, "onnxruntime", "cpu", "int8", BackendOptions(progress=lambda _m: None))


@pytest.fixture(scope="module")
def ort_fp32(int8_cache, golden_model):
    return create_backend(golden_model, "onnxruntime", "cpu", "fp32", BackendOptions(progress=lambda _m: None))


def fp32_generator_convs(backend) -> int:
    path = backend.graphs.manifest.graph_path(backend.graphs.export_dir, "generator")
    return sum(n.op_type == "Conv" for n in onnx.load(str(path)).graph.node)


def test_onnxruntime_int8_runs_int8_kernels(ort_int8, ort_fp32):
    kernels = ort_int8.graphs.int8_kernels["generator"]
    convs = fp32_generator_convs(ort_fp32)
    assert kernels.get("QLinearConv", 0) == convs, kernels  # every convolution of the generator, fused
    assert kernels.get("float Conv", 0) == 0, kernels
    assert "QLinearConv" in ort_int8.describe() and ort_int8.precision == "int8"
    assert "keypoints" not in ort_int8.graphs.int8_kernels  # by default only the generator is quantized


def test_openvino_int8_runs_int8_kernels(int8_cache, golden_model, ort_fp32):
    pytest.importorskip("openvino", reason="OpenVINO is not installed")
    backend = create_backend(golden_model, "openvino", "cpu", "int8", BackendOptions(progress=lambda _m: None))
    kernels = backend.graphs.int8_kernels["generator"]
    assert kernels["int8 Convolution"] >= fp32_generator_convs(ort_fp32) - 1, kernels
    assert "int8 Convolution" in backend.describe()


def _fake_int8_export(int8_cache, ort_int8, ort_fp32, tmp_path):
    """A copy of the int8 export whose 'quantized' generator is the fp32 graph (what a broken quantizer makes)."""
    src = ort_int8.graphs.export_dir
    fake = tmp_path / "fake-int8"
    shutil.copytree(src, fake)
    shutil.copyfile(ort_fp32.graphs.manifest.graph_path(ort_fp32.graphs.export_dir, "generator"),
                    fake / "generator.onnx")
    # its manifest re-sealed, as a broken quantizer would have written it: the integrity check passes and the
    # int8-kernel check is what must refuse it
    import json

    from splinecam.engines.cache_store import file_sha256

    manifest = json.loads((fake / "manifest.json").read_text())
    manifest["graphs"]["generator"]["sha256"] = file_sha256(fake / "generator.onnx")
    (fake / "manifest.json").write_text(json.dumps(manifest))
    return fake


def test_onnxruntime_refuses_an_int8_export_that_would_run_fp32(int8_cache, golden_model, ort_int8, ort_fp32, tmp_path):
    fake = _fake_int8_export(int8_cache, ort_int8, ort_fp32, tmp_path)
    with pytest.raises(BackendUnavailableError, match="no int8 kernel"):
        create_backend(golden_model, "onnxruntime", "cpu", "int8", BackendOptions(onnx_dir=fake))


def test_onnxruntime_int8_without_qdq_fusion_is_refused(int8_cache, golden_model, ort_int8):
    """Basic graph optimisation does not fuse DQ → Conv → Q: the QDQ graph would run its convolutions in fp32."""
    options = BackendOptions(onnx_dir=ort_int8.graphs.export_dir, ort=OrtOptions(graph_optimization="basic"))
    with pytest.raises(BackendUnavailableError, match="no int8 kernel"):
        create_backend(golden_model, "onnxruntime", "cpu", "int8", options)


def test_openvino_refuses_an_int8_export_that_would_run_fp32(int8_cache, golden_model, ort_int8, ort_fp32, tmp_path):
    pytest.importorskip("openvino", reason="OpenVINO is not installed")
    fake = _fake_int8_export(int8_cache, ort_int8, ort_fp32, tmp_path)
    with pytest.raises(BackendUnavailableError, match="int8 data"):
        create_backend(golden_model, "openvino", "cpu", "int8", BackendOptions(onnx_dir=fake))


def test_int8_psnr_against_fp32_on_frames_calibration_did_not_see(ort_int8, ort_fp32):
    calibration = Calibration.bundled()
    size = ort_fp32.size
    frames = _calibration_frames(dataclasses.replace(calibration, first_frame=0, frames=calibration.first_frame),
                                 size)[:12]  # frames 0-59 of the clip: calibration starts at 60
    avatar = _avatar_image(calibration, size)
    from splinecam.engines.quality import psnr

    psnrs = []
    states = [b.prepare_source(avatar) for b in (ort_fp32, ort_int8)]
    kp_ref = ort_fp32.keypoints(frames[0])
    scale, _ = relative_scale(states[0].kp, kp_ref)
    for frame in frames:
        kp = relative_keypoints(states[0].kp, ort_fp32.keypoints(frame), kp_ref, scale).astype(np.float32)
        want, got = (b.generate(s, kp).astype(np.float64) for b, s in zip((ort_fp32, ort_int8), states))
        psnrs.append(psnr(want, got, peak=255.0))
    assert min(psnrs) >= INT8_MIN_PSNR, psnrs
    assert max(psnrs) < 99  # int8 is not fp32 under another name


def test_calibration_feeds_are_the_real_per_frame_inputs(ort_fp32):
    calibration = dataclasses.replace(Calibration.bundled(), frames=8)
    feeds = calibration_feeds(ort_fp32, calibration)
    info = ort_fp32.graphs.manifest.graphs["generator"]
    names = {t.name for t in info.inputs}
    assert len(feeds["generator"]) == 8 + 2  # the avatar × 8 frames + the clip's first frame × every 4th
    assert all(names <= set(f) for f in feeds["generator"])
    state = ort_fp32.prepare_source(_avatar_image(calibration, ort_fp32.size))
    first = feeds["generator"][0]
    for name, value in state.tensors.items():  # the avatar's cached source tensors, as the live loop has them
        np.testing.assert_array_equal(first[name], value)
    kps = np.stack([f["kp_driving"] for f in feeds["generator"][:8]])
    assert np.abs(kps - kps[0]).max() > 1e-3  # the clip's motion, not one frame repeated
    assert len(feeds["keypoints"]) == 8 and feeds["keypoints"][0]["image"].shape == (1, 3, ort_fp32.size, ort_fp32.size)


def test_int8_cache_is_keyed_by_model_calibration_and_quantizer(tmp_path):
    video = tmp_path / "me.mp4"
    shutil.copyfile(Calibration.bundled().video, video)
    bundled, mine = Calibration.bundled(), Calibration.from_video(video)
    assert bundled.key() != mine.key()  # another first frame: another calibration
    assert Calibration.from_video(None) == bundled
    from splinecam.engines.export.manifest import GraphInfo, Manifest

    def manifest(model_hash: str, graph_sha: str) -> Manifest:
        m = Manifest(model_hash, "x", 256, 50, 10, "fp32", 17, "0", "0")
        m.graphs["generator"] = GraphInfo("generator", "generator.onnx", [], [], graph_sha)
        return m

    base = manifest("ab" * 32, "1" * 64)
    a = int8_export_dir(base, bundled.key(), tmp_path)
    assert a != int8_export_dir(manifest("cd" * 32, "1" * 64), bundled.key(), tmp_path)  # another model
    assert a != int8_export_dir(manifest("ab" * 32, "2" * 64), bundled.key(), tmp_path)  # other fp32 graphs
    assert a != int8_export_dir(base, mine.key(), tmp_path)                                # another calibration
    assert a != int8_export_dir(base, dataclasses.replace(bundled, graphs=("generator", "keypoints")).key(), tmp_path)
    assert "-int8-" in a.name and a.parent == tmp_path / "onnx"


def test_missing_calibration_video_is_one_line(golden_model, tmp_path):
    with pytest.raises(SplinecamError) as err:
        create_backend(golden_model, "onnxruntime", "cpu", "int8", BackendOptions(calibration=tmp_path / "nope.mp4"))
    assert "\n" not in str(err.value) and "--calibration" in str(err.value)


def test_export_command_writes_an_int8_export(tmp_path, golden_model, int8_cache):
    """``splinecam export --precision int8 --calibration VIDEO`` with a user's (here: six-frame) video."""
    from pathlib import Path

    from splinecam.cli import main
    from splinecam.engines.export.graph_checks import inspect_graph
    from splinecam.engines.export.manifest import Manifest
    from splinecam.engines.media import VideoReader, VideoWriter

    clip = tmp_path / "mine.mp4"
    frames = VideoReader(Calibration.bundled().video).read_all(max_frames=6)
    writer = VideoWriter(clip, 25, (frames[0].shape[1], frames[0].shape[0]))
    for frame in frames:
        writer.write(frame)
    writer.close()
    golden = Path(str(golden_model.path)).parent
    out = tmp_path / "int8"
    assert main(["export", "--checkpoint", str(golden_model.path), "--config", str(golden / "config.yaml"),
                 "--out", str(out), "--precision", "int8", "--calibration", str(clip)]) == 0
    manifest = Manifest.read(out)
    assert manifest.precision == "int8" and manifest.model_hash == golden_model.model_hash
    record = json.loads((out / INT8_RECORD).read_text())
    assert set(record["quantized"]) == {"generator"} and record["quantized"]["generator"]["QuantizeLinear"] > 0
    assert record["samples"]["generator"] == 6 + 2 and "mine.mp4" in record["calibration"]
    for info in manifest.graphs.values():
        assert inspect_graph(out / info.file).ok  # QuantizeLinear / DequantizeLinear are TensorRT ops too
    backend = create_backend(golden_model, "onnxruntime", "cpu", "int8", BackendOptions(onnx_dir=out))
    assert backend.graphs.int8_kernels["generator"]["QLinearConv"] > 0


def test_auto_times_int8_only_once_its_graphs_are_cached(int8_cache, golden_model, ort_int8, tmp_path, monkeypatch):
    """--backend auto's timing round (engines/backends/autotune) would otherwise calibrate on first start."""
    from splinecam.engines.backends import autotune

    assert ("onnxruntime", "int8") in autotune.timed_candidates(golden_model)  # the module's cache holds them
    monkeypatch.setenv("SPLINECAM_CACHE", str(tmp_path / "empty"))
    assert all(p != "int8" for _, p in autotune.timed_candidates(golden_model))
