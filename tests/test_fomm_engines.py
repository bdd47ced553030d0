"""FOMM wherever TPSMM runs: the exported graphs (TensorRT's operators, static shapes, no inverse), the
torch and ONNX Runtime backends against the official outputs, ``animate --crop none`` = the official
``demo.py --relative --adapt_scale``, ``--crop face``, the live loop (calibration, smoothing, hotkeys,
fallback) with (K, 6) keypoints, AVD refused, ``bench`` and ``evaluate``."""

from __future__ import annotations

import json
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import onnx
import pytest
import torch

from splinecam.engines.backends import BackendOptions, create_backend
from splinecam.engines.backends.base import image_to_nchw
from splinecam.engines.cpu import cpu_info
from splinecam.engines.errors import BackendUnavailableError, SplinecamError
from splinecam.engines.export.graph_checks import inspect_graph
from splinecam.engines.export.manifest import Manifest
from splinecam.engines.fomm import keypoints as fk
from splinecam.live.normalise import KeypointNormaliser
from tests.conftest import DATA, FOMM_GOLDEN
from tests.reference_tolerances import fomm_tol

ORT_TOL = 1e-3
FOMM_ARGS = ["--checkpoint", str(FOMM_GOLDEN / "checkpoint.pth.tar"), "--config", str(FOMM_GOLDEN / "config.yaml")]
GRAPHS = ("keypoints", "source_encoder", "generator")


def run_cli(*args, cwd=None):
    return subprocess.run([sys.executable, "-m", "splinecam", *args], capture_output=True, text=True, cwd=cwd,
                          timeout=900)


def packed(io, prefix, i=None):
    v, j = io[f"{prefix}_value"], io[f"{prefix}_jacobian"]
    return fk.pack(v if i is None else v[i], j if i is None else j[i])


def psnr(a: np.ndarray, b: np.ndarray) -> float:
    from splinecam.engines.quality import psnr as quality_psnr  # the one PSNR (0-255 pictures)

    return quality_psnr(a, b, peak=255.0)


@pytest.fixture(scope="module")
def torch_backend(fomm_golden_model):
    return create_backend(fomm_golden_model, "torch", "cpu", "fp32")


def fomm_export(tmp_path_factory, precision: str) -> Path:
    from splinecam.cli import main

    out = tmp_path_factory.getbasetemp() / f"fomm-golden-export-{precision}"
    if not (out / "manifest.json").is_file():
        assert main(["export", *FOMM_ARGS, "--out", str(out), "--precision", precision]) == 0
    return out


@pytest.fixture(scope="module")
def ort_backend(tmp_path_factory, fomm_golden_model):
    return create_backend(fomm_golden_model, "onnxruntime", "cpu", "fp32",
                          BackendOptions(onnx_dir=fomm_export(tmp_path_factory, "fp32")))


# ----------------------------------------------------------------------------- export


@pytest.mark.parametrize("precision", ["fp32", "fp16"])
def test_exported_graphs_fit_tensorrt(tmp_path_factory, fomm_golden_model, shared, precision):
    directory = fomm_export(tmp_path_factory, precision)
    lines = (shared / "reference" / "tensorrt10-onnx-ops.txt").read_text().splitlines()
    allowed = frozenset(ln.strip() for ln in lines if ln.strip() and not ln.startswith("#"))
    manifest = Manifest.read(directory)
    assert manifest.family == "fomm" and set(manifest.graphs) == set(GRAPHS)  # no background graph
    assert manifest.model_hash == fomm_golden_model.model_hash and manifest.num_kp == 10
    for name in GRAPHS:
        report = inspect_graph(directory / f"{name}.onnx", allowed)
        assert report.ok, f"{precision}/{name}: {report.problems}"
        assert "Inverse" not in report.ops and not report.dynamic and report.domains == ["ai.onnx"]
    gen = manifest.graphs["generator"]
    assert [t.name for t in gen.inputs] == ["source_small", "source_heat", "source_feat0", "source_kp",
                                            "kp_driving", "kp_jacobian"]
    assert gen.input("kp_jacobian").shape == (1, 10, 2, 2) and gen.input("kp_jacobian").dtype == "float32"
    assert manifest.graphs["keypoints"].output("kp").shape == (1, 10, 6)
    assert manifest.graphs["source_encoder"].output("kp_source").shape == (1, 10, 6)
    onnx.checker.check_model(onnx.load(str(directory / "generator.onnx")), full_check=True)


# ----------------------------------------------------------------------------- backends


def test_torch_backend_reproduces_the_official_outputs(torch_backend, fomm_golden_io):
    io = fomm_golden_io
    assert torch_backend.kp_width == 6
    state = torch_backend.encode_source(image_to_nchw(io["source"]))
    assert state.kp.shape == (10, 6)
    assert np.abs(state.kp - packed(io, "kp_source", 0)).max() <= fomm_tol("kp_source_jacobian")
    for i in range(len(io["driving"])):
        kp = torch_backend.keypoints_nchw(image_to_nchw(io["driving"][i]))
        assert np.abs(kp - packed(io, "kp_driving", i)).max() <= fomm_tol("kp_driving_jacobian")
        for pred_key, kp_key in (("rel_prediction", "kp_relative"), ("std_prediction", "kp_driving")):
            pred = torch_backend.predict(state, packed(io, kp_key, i))[0]
            assert np.abs(pred - io[pred_key][i]).max() <= fomm_tol(pred_key), (pred_key, i)
    for i in range(2):
        pred = torch_backend.predict(state, packed(io, "synth_kp", i))[0]
        assert np.abs(pred - io["synth_prediction"][i]).max() <= fomm_tol("synth_prediction")


@torch.no_grad()
def test_cached_generator_equals_the_uncached_model(torch_backend, fomm_golden_model, fomm_golden_io):
    io = fomm_golden_io
    state = torch_backend.encode_source(image_to_nchw(io["source"]))
    src = torch.from_numpy(image_to_nchw(io["source"]))
    for i in range(2):
        kp = packed(io, "synth_kp", i)
        cached = torch_backend.predict(state, kp)
        uncached = fomm_golden_model.model.animate(src, torch.from_numpy(state.kp)[None], torch.from_numpy(kp)[None])
        assert np.abs(cached - uncached.numpy()).max() <= 1e-5


def test_onnxruntime_within_1e3_of_torch(ort_backend, torch_backend, fomm_golden_io):
    io = fomm_golden_io
    s_ort = ort_backend.encode_source(image_to_nchw(io["source"]))
    s_pt = torch_backend.encode_source(image_to_nchw(io["source"]))
    assert np.abs(s_ort.kp - s_pt.kp).max() <= ORT_TOL
    for i in range(len(io["driving"])):
        frame = image_to_nchw(io["driving"][i])
        assert np.abs(ort_backend.keypoints_nchw(frame) - torch_backend.keypoints_nchw(frame)).max() <= ORT_TOL
        for kp in (packed(io, "kp_relative", i), packed(io, "kp_driving", i)):
            assert np.abs(ort_backend.predict(s_ort, kp) - torch_backend.predict(s_pt, kp)).max() <= ORT_TOL
    for i in range(2):
        kp = packed(io, "synth_kp", i)
        assert np.abs(ort_backend.predict(s_ort, kp) - torch_backend.predict(s_pt, kp)).max() <= ORT_TOL


def test_openvino_within_1e3_of_torch(tmp_path_factory, fomm_golden_model, torch_backend, fomm_golden_io):
    pytest.importorskip("openvino", reason="OpenVINO is not installed")
    io = fomm_golden_io
    ov = create_backend(fomm_golden_model, "openvino", "cpu", "fp32",
                        BackendOptions(onnx_dir=fomm_export(tmp_path_factory, "fp32")))
    s_ov = ov.encode_source(image_to_nchw(io["source"]))
    s_pt = torch_backend.encode_source(image_to_nchw(io["source"]))
    assert np.abs(s_ov.kp - s_pt.kp).max() <= ORT_TOL
    frame = image_to_nchw(io["driving"][1])
    assert np.abs(ov.keypoints_nchw(frame) - torch_backend.keypoints_nchw(frame)).max() <= ORT_TOL
    for kp in (packed(io, "kp_relative", 1), packed(io, "synth_kp", 0)):
        assert np.abs(ov.predict(s_ov, kp) - torch_backend.predict(s_pt, kp)).max() <= ORT_TOL


def test_onnxruntime_fp16_graphs_keep_35db(tmp_path_factory, fomm_golden_model, torch_backend, fomm_golden_io):
    io = fomm_golden_io
    ort16 = create_backend(fomm_golden_model, "onnxruntime", "cpu", "fp16",
                           BackendOptions(onnx_dir=fomm_export(tmp_path_factory, "fp16")))
    s16, s32 = ort16.prepare_source(io["source"]), torch_backend.prepare_source(io["source"])
    for i in range(2):
        kp = packed(io, "synth_kp", i)
        assert psnr(ort16.generate(s16, kp), torch_backend.generate(s32, kp)) >= 35.0


@pytest.mark.slow
@pytest.mark.skipif(not cpu_info().has_bf16,
                    reason=f"the compiled bf16 path needs AVX-512 bf16 / AMX; this CPU: {cpu_info().label}")
def test_compiled_bf16_cpu_path_keeps_35db(fomm_golden_model, fomm_golden_io):
    """What ``auto`` picks on a bf16 CPU: inductor-compiled bf16 generator, float32 keypoints (minutes on 2 cores)."""
    io = fomm_golden_io
    backend = create_backend(fomm_golden_model, "torch", "cpu", "bf16", BackendOptions(progress=lambda _m: None))
    assert backend.describe().endswith("+compiled")
    state = backend.prepare_source((io["source"] * 255).round().astype(np.uint8))
    assert np.abs(state.kp - packed(io, "kp_source", 0)).max() <= 1e-2
    for i in range(2):
        got = backend.generate(state, packed(io, "synth_kp", i))
        assert psnr(got, np.rint(io["synth_prediction"][i].transpose(1, 2, 0) * 255)) >= 35.0


def test_avd_is_refused_for_fomm(torch_backend, fomm_golden_model):
    assert not torch_backend.has_avd and not fomm_golden_model.has_avd
    with pytest.raises(BackendUnavailableError, match="does not exist for FOMM"):
        torch_backend.avd(np.zeros((10, 6), np.float32), np.zeros((10, 6), np.float32))
    with pytest.raises(SplinecamError, match="does not exist for FOMM"):
        KeypointNormaliser(np.zeros((10, 6), np.float32), "avd")


def test_animate_avd_mode_is_one_line(tmp_path):
    res = run_cli("animate", *FOMM_ARGS, "--mode", "avd", "--source", str(DATA / "samples" / "source.png"),
                  "--driving", str(DATA / "samples" / "driving.mp4"), "--crop", "none", "--out",
                  str(tmp_path / "x.mp4"), cwd=tmp_path)
    lines = res.stderr.strip().splitlines()
    assert res.returncode == 2 and len(lines) == 1 and "does not exist for FOMM" in lines[0]
    assert not (tmp_path / "x.mp4").exists()


def test_autotune_measures_fomm_candidates(tmp_path_factory, monkeypatch, fomm_golden_model, fomm_golden_io):
    """--backend auto on a CPU times real candidates on the FOMM avatar (cheap ones here: no compiling)."""
    import splinecam.engines.backends.autotune as autotune

    monkeypatch.setattr(autotune, "candidates", lambda: [("torch", "fp32"), ("onnxruntime", "fp32")])
    sample = (fomm_golden_io["source"] * 255).round().astype(np.uint8)
    options = BackendOptions(progress=lambda _m: None, onnx_dir=fomm_export(tmp_path_factory, "fp32"))
    choice = autotune.measure(fomm_golden_model, sample, options)
    assert [t.error for t in choice.trials] == [None, None] and all(t.ms for t in choice.trials)
    assert choice.trials[1].psnr_db >= 35.0 and (choice.engine, choice.precision) in {("torch", "fp32"),
                                                                                     ("onnxruntime", "fp32")}
    moved = autotune.talking_head_motion(fk.pack(fomm_golden_io["kp_source_value"][0], fomm_golden_io["kp_source_jacobian"][0]), 4)
    assert moved[1].shape == (10, 6) and not np.allclose(moved[1][:, 2:], moved[0][:, 2:])  # jacobians turn too


# ----------------------------------------------------------------------------- normalisation, animate


def test_official_preprocessing_is_reproduced(fomm_golden_io):
    """--crop none reads and resizes exactly as the official FOMM demo did for the reference data."""
    from splinecam.engines.media import VideoReader, read_image
    from splinecam.live.animate import official_resize

    io = fomm_golden_io
    assert np.abs(official_resize(read_image(DATA / "samples" / "source.png"), 256) - io["source"]).max() == 0.0
    idx = io["driving_frame_indices"]
    frames = VideoReader(DATA / "samples" / "driving.mp4").read_all(max_frames=int(idx.max()) + 1)
    for j, i in enumerate(idx):
        assert np.abs(official_resize(frames[i], 256) - io["driving"][j]).max() == 0.0


def test_official_demo_frames_from_the_normaliser(torch_backend, fomm_golden_io):
    """demo.py --relative --adapt_scale: first driving frame the reference, relative jacobian on; and
    --no-relative-jacobian (positions only). Backend + normaliser give the official uint8 frames."""
    io = fomm_golden_io
    state = torch_backend.prepare_source(io["source"])
    for use_jac, key in ((True, "rel_prediction"), (False, "relnojac_prediction")):
        norm = KeypointNormaliser(state.kp, "relative", relative_jacobian=use_jac)
        for j, frame in enumerate(io["driving"]):
            kp_n = norm(torch_backend.keypoints(frame))  # calibrates on frame 0, as the demo does
            if use_jac:
                value, jac = fk.unpack(kp_n)
                assert np.abs(value - io["kp_relative_value"][j]).max() <= fomm_tol("kp_relative_value")
                assert np.abs(jac - io["kp_relative_jacobian"][j]).max() <= fomm_tol("kp_relative_jacobian")
            out = torch_backend.generate(state, kp_n)
            want = np.rint(io[key][j].transpose(1, 2, 0) * 255)
            assert np.abs(out.astype(np.float64) - want).max() <= 1.0, (key, j)
        assert abs(norm.calibration.scale - float(io["relative_scale"])) <= 1e-6 * float(io["relative_scale"])


def test_degenerate_jacobians_give_finite_motion():
    rng = np.random.default_rng(0)
    src = fk.pack(rng.uniform(-0.5, 0.5, (10, 2)), np.tile(np.eye(2), (10, 1, 1)))
    drv = src.copy()
    drv[:, 2:] = 0.0  # singular driving jacobians
    norm = KeypointNormaliser(src, "relative")
    norm.calibrate(drv)
    out = norm(drv)
    assert np.isfinite(out).all()
    from splinecam.engines.fomm.host import generator_feeds

    feeds = generator_feeds(None, out, src)
    assert all(np.isfinite(v).all() for v in feeds.values())


def test_animate_crop_none_writes_the_official_demo_frames(tmp_path, fomm_golden_io):
    """The issue's command: skimage resize of source and driving frames, relative jacobian on, adapt
    scale from the first driving frame, frames to uint8, the driving fps. Decoded H.264 frames against
    the official predictions of the golden driving frames 0 and 10."""
    from splinecam.engines.media import VideoReader, count_frames

    out = tmp_path / "fomm.mp4"
    res = run_cli("animate", *FOMM_ARGS, "--mode", "relative", "--crop", "none", "--source",
                  str(DATA / "samples" / "source.png"), "--driving", str(DATA / "samples" / "driving.mp4"),
                  "--out", str(out), "--max-frames", "11", "--backend", "torch", "--precision", "fp32", cwd=tmp_path)
    assert res.returncode == 0, res.stderr
    reader = VideoReader(out)
    assert reader.size == (256, 256) and reader.fps == 25 and count_frames(out) == 11
    frames = reader.read_all()
    io = fomm_golden_io
    for j, i in enumerate(io["driving_frame_indices"]):
        if i < len(frames):
            assert psnr(frames[i], np.rint(io["rel_prediction"][j].transpose(1, 2, 0) * 255)) >= 30.0, i


def test_animate_crop_face(tmp_path):
    from splinecam.engines.media import VideoReader, count_frames

    out = tmp_path / "face.mp4"
    res = run_cli("animate", *FOMM_ARGS, "--source", str(DATA / "avatars" / "mona.jpg"), "--driving",
                  str(DATA / "clips" / "webcam" / "lp-d12.mp4"), "--max-frames", "3", "--output-size", "320",
                  "--no-relative-jacobian", "--out", str(out), "--backend", "onnxruntime", "--precision", "fp32",
                  cwd=tmp_path)
    assert res.returncode == 0, res.stderr
    assert VideoReader(out).size == (320, 320) and count_frames(out) == 3


# ----------------------------------------------------------------------------- live


def test_live_loop_with_fomm_keypoints(tmp_path, torch_backend, monkeypatch):
    """Calibration hotkey, smoothing, the no-face fallback and mode cycling work on (K, 6) keypoints."""
    monkeypatch.setenv("XDG_CONFIG_HOME", str(tmp_path / "config"))
    from splinecam.live.capture import CapturedFrame
    from splinecam.live.hotkeys import Action, Command
    from tests.test_live_pipeline import FakeCamera, build

    pipe, _, _ = build(tmp_path, FakeCamera(n=20, live=False, fps=25.0, face=lambda i: i != 3), backend=torch_backend)
    proc = pipe.processor
    assert proc.modes == ("relative", "standard")  # no AVD for FOMM: not offered
    src = pipe.capture.source
    shapes, kinds = [], []
    for i in range(5):
        img = src.read()
        if i == 2:
            proc.handle(Command(Action.CALIBRATE), 0.0)
            img[100:140, 140:180] = 0  # a different "pose" becomes the reference
        p = proc.process(CapturedFrame(img, time.perf_counter(), i, i * 0.04))
        shapes.append(None if p.kp_raw is None else p.kp_raw.shape)
        kinds.append(p.output.kind)
        assert p.output.image.shape == (180, 320, 3)
    assert shapes == [(10, 6), (10, 6), (10, 6), None, (10, 6)]       # frame 3: no face → fallback pose
    assert kinds == ["animated", "animated", "animated", "avatar", "animated"]
    assert proc.normaliser.calibration.kp_driving_ref.shape == (10, 6)
    proc.handle(Command(Action.SMOOTHING), 0.0)
    proc.handle(Command(Action.CYCLE_MODE), 0.0)
    assert proc.normaliser.mode == "standard"
    p = proc.process(CapturedFrame(src.read(), time.perf_counter(), 5, 0.2))
    assert p.kp_raw.shape == (10, 6)
    assert not proc.restore_calibration(np.zeros((50, 2), np.float32))  # a TPSMM calibration is not reused
    proc.close()


def test_live_headless_with_a_fomm_checkpoint(shared, tmp_path, capsys, monkeypatch):
    from splinecam.cli import main
    from splinecam.engines.media import VideoReader, count_frames

    monkeypatch.setenv("XDG_CONFIG_HOME", str(tmp_path / "config"))
    monkeypatch.chdir(tmp_path)
    rc = main(["live", "--camera", str(shared / "data" / "clips" / "webcam" / "lp-d12.mp4"),
               "--avatar", str(shared / "data" / "avatars" / "mona.jpg"), "--no-preview", "--no-virtual-camera",
               "--record", "out.mp4", "--max-frames", "3", "--metrics", "m.json", *FOMM_ARGS,
               "--backend", "torch", "--precision", "fp32"])
    text = capsys.readouterr()
    assert rc == 0, text.err
    assert count_frames(tmp_path / "out.mp4") == 3
    m = json.loads((tmp_path / "m.json").read_text())
    assert m["frames"]["processed"] == 3 and m["frames"]["no_face"] == 0
    assert all(f.std() > 10 for f in VideoReader(tmp_path / "out.mp4").read_all())


def test_remote_worker_runs_a_fomm_checkpoint(torch_backend, fomm_golden_io):
    """live --remote: the worker's FOMM model, (K, 6) keypoints over the wire, the same frames as locally."""
    from splinecam.engines.remote.client import RemoteBackend
    from splinecam.engines.remote.worker import WorkerServer

    server = WorkerServer(torch_backend, "fomm-token", "127.0.0.1", 0, hello_timeout=2.0).start()
    remote = RemoteBackend(*server.address, "fomm-token", codec="raw")
    try:
        assert remote.config.family == "fomm" and remote.kp_width == 6 and not remote.has_avd
        image = (fomm_golden_io["source"] * 255).round().astype(np.uint8)
        s_remote, s_local = remote.prepare_source(image), torch_backend.prepare_source(image)
        np.testing.assert_array_equal(s_remote.kp, s_local.kp)
        frame = (fomm_golden_io["driving"][1] * 255).round().astype(np.uint8)
        kp = remote.keypoints(frame)
        assert kp.shape == (10, 6)
        kp_n = KeypointNormaliser(s_remote.kp, "relative")(kp)
        np.testing.assert_array_equal(remote.generate(s_remote, kp_n), torch_backend.generate(s_local, kp_n))
    finally:
        remote.close()
        server.close()


# ----------------------------------------------------------------------------- bench, evaluate


def test_bench_rows_with_the_official_fomm_baseline(tmp_path):
    from splinecam.cli import main

    out = tmp_path / "b.json"
    assert main(["bench", *FOMM_ARGS, "--backends", "torch,onnxruntime,tensorrt", "--precisions", "fp32",
                 "--frames", "2", "--warmup", "1", "--threads", "2", "--json", str(out)]) == 0
    data = json.loads(out.read_text())
    rows = {(r["backend"], r["precision"]): r for r in data["results"]}
    base = next(r for r in data["results"] if r["baseline"])
    assert "FOMM kp_detector + OcclusionAwareGenerator" in base["variant"]
    assert set(base["stages_ms"]) == {"keypoints", "normalise", "generator"}
    assert rows[("torch", "fp32")]["status"] == "ok" and rows[("onnxruntime", "fp32")]["status"] == "ok"
    assert rows[("tensorrt", "fp32")]["status"] == "unavailable"
    for key in (("torch", "fp32"), ("onnxruntime", "fp32")):
        assert rows[key]["max_abs_diff_vs_fp32"] <= 2  # the same frames as the official work, uint8
    assert data["model"]["gflops_per_frame"] > data["model"]["gflops_per_frame_cached"] > 0


def test_evaluate_a_fomm_checkpoint(tmp_path):
    from splinecam.training.evaluate import evaluate

    res = evaluate(str(FOMM_GOLDEN / "checkpoint.pth.tar"), [str(DATA / "clips" / "webcam" / "lp-d12.mp4")],
                   max_frames=4, config=str(FOMM_GOLDEN / "config.yaml"), progress=lambda _m: None)
    assert res.image_size == 256 and res.videos and res.videos[0].frames == 4
    assert np.isfinite(res.mean["l1"]) and res.mean["l1"] > 0


# ----------------------------------------------------------------------------- TensorRT (a GPU only)


def _need_tensorrt():
    from splinecam.engines.backends.tensorrt_runner import tensorrt_unavailable_reason

    reason = tensorrt_unavailable_reason()
    if reason:
        pytest.skip(f"TensorRT path NOT RUN: {reason}")


@pytest.mark.tensorrt
@pytest.mark.gpu
@pytest.mark.parametrize("precision,tol", [("fp32", 2e-3), ("fp16", 5e-2)])
def test_tensorrt_matches_torch(tmp_path, fomm_golden_model, torch_backend, fomm_golden_io, precision, tol):
    """The FOMM graphs through the same TensorRTGraphs runner (plans built from the exported ONNX)."""
    _need_tensorrt()
    io = fomm_golden_io
    backend = create_backend(fomm_golden_model, "tensorrt", "cuda", precision, BackendOptions(cache_dir=tmp_path))
    image = (io["source"] * 255).round().astype(np.uint8)
    state, ref = backend.prepare_source(image), torch_backend.prepare_source(image)
    assert state.kp.shape == (10, 6)
    for i in range(len(io["driving"])):
        kp = packed(io, "kp_relative", i)
        got = backend.generate(state, kp).astype(np.float32)
        assert np.abs(got - torch_backend.generate(ref, kp).astype(np.float32)).mean() / 255 <= tol


@pytest.mark.tensorrt
@pytest.mark.gpu
def test_tensorrt_overlapped_pipeline(tmp_path, fomm_golden_model, fomm_golden_io):
    _need_tensorrt()
    io = fomm_golden_io
    backend = create_backend(fomm_golden_model, "tensorrt", "cuda", "fp16", BackendOptions(cache_dir=tmp_path))
    state = backend.prepare_source((io["source"] * 255).round().astype(np.uint8))
    norm = KeypointNormaliser(state.kp, "relative")
    pipe = backend.graphs.overlapped(state, norm)
    frames = [(f * 255).round().astype(np.uint8) for f in io["driving"]]
    out = [pipe.submit(f) for f in frames] + [pipe.flush()]
    done = [r for r in out if r is not None]
    assert [r.index for r in done] == list(range(len(frames)))
    check = KeypointNormaliser(state.kp, "relative")
    for r, f in zip(done, frames):
        want = backend.generate(state, check(backend.keypoints(f)))
        assert np.abs(r.frame.astype(int) - want.astype(int)).max() <= 2


# ----------------------------------------------------------------------------- the TensorRT runner on the CPU

FAKE_SIZE, FAKE_KP = 16, 10


def _fake_fomm_plans() -> tuple[dict, dict]:
    """Plans with FOMM's tensor names and tiny shapes, and what they compute (tests/fake_tensorrt.py): the
    generator's output depends on the positions *and* the jacobians it is fed, so a wrong or missing
    ``kp_jacobian`` binding shows."""
    import fake_tensorrt as ft

    s, k = FAKE_SIZE, FAKE_KP
    img = [1, 3, s, s]
    grid = ft.tiny_grid(k)
    plans = {
        "keypoints": ft.plan_bytes("keypoints", [("image", img, "float32", "in"), ("kp", [1, k, 6], "float32", "out")]),
        "source_encoder": ft.plan_bytes("source_encoder", [("source", img, "float32", "in"),
                                                           ("kp_source", [1, k, 6], "float32", "out"),
                                                           ("source_feat0", img, "float16", "out"),
                                                           ("source_kp", [1, k, 2], "float32", "out")]),
        "generator": ft.plan_bytes("generator", [("source_feat0", img, "float16", "in"),
                                                 ("source_kp", [1, k, 2], "float32", "in"),
                                                 ("kp_driving", [1, k, 2], "float32", "in"),
                                                 ("kp_jacobian", [1, k, 2, 2], "float32", "in"),
                                                 ("prediction", img, "float32", "out")]),
    }

    def keypoints(a):
        m = a["image"].mean(dtype=np.float32) - np.float32(0.5)
        a["kp"][0] = fk.pack(grid + m * np.float32(0.1), np.tile(np.eye(2, dtype=np.float32) * (1 + m), (k, 1, 1)))

    def source_encoder(a):
        a["kp_source"][0] = fk.pack(grid, None)
        a["source_feat0"][...] = a["source"].astype(np.float16)
        a["source_kp"][0] = grid

    def generator(a):
        shift = (a["kp_driving"][0] - a["source_kp"][0]).mean(dtype=np.float32) * np.float32(5.0)
        turn = (a["kp_jacobian"][0] - np.eye(2, dtype=np.float32)).mean(dtype=np.float32) * np.float32(3.0)
        a["prediction"][...] = np.clip(a["source_feat0"].astype(np.float32) * np.float32(0.5) + shift + turn, 0, 1)

    return plans, {"keypoints": keypoints, "source_encoder": source_encoder, "generator": generator}


def test_tensorrt_runner_with_fomm_plans_on_the_recording_device(monkeypatch):
    """The same TensorRTGraphs runner and overlapped pipeline (fake tensorrt module, CPU 'device'): FOMM's
    feeds reach the generator by name in the synchronous calls and through the two-stream pipeline."""
    import sys

    import fake_tensorrt as ft

    import splinecam.engines.backends.tensorrt_runner as tr
    from splinecam.engines.backends.base import Backend
    from splinecam.engines.backends.tensorrt_runner import TensorRTGraphs
    from splinecam.engines.cuda_pipeline import RecordingDevice
    from splinecam.engines.fomm.config import FommConfig

    trt = ft.make_fake_tensorrt()
    plans, compute = _fake_fomm_plans()
    trt.compute.update(compute)
    monkeypatch.setitem(sys.modules, "tensorrt", trt)
    monkeypatch.setattr(tr, "_LOGGER", None)
    config = FommConfig(name="tiny-fomm", num_kp=FAKE_KP, image_size=FAKE_SIZE)
    backend = Backend(config, TensorRTGraphs.from_plans(config, "fp16", plans, RecordingDevice()))
    rng = np.random.default_rng(0)
    state = backend.prepare_source(rng.integers(60, 200, (FAKE_SIZE, FAKE_SIZE, 3), dtype=np.uint8))
    assert state.kp.shape == (FAKE_KP, 6) and set(state.tensors) >= {"source_feat0", "source_kp"}
    frames = [rng.integers(30 + 20 * i, 90 + 20 * i, (FAKE_SIZE, FAKE_SIZE, 3), dtype=np.uint8) for i in range(4)]
    pipe = backend.overlapped()
    out = [pipe.submit(f, source=state) for f in frames] + [pipe.flush()]
    done = [r for r in out if r is not None]
    assert [r.index for r in done] == list(range(4))
    outputs = []
    for r, f in zip(done, frames):
        kp = backend.keypoints(f)
        np.testing.assert_array_equal(r.kp, kp)
        sync = backend.generate(state, kp)
        np.testing.assert_array_equal(r.frame, sync)
        outputs.append(sync)
    # the jacobians matter: the same positions with the source's jacobians give another frame
    still = backend.keypoints(frames[3]).copy()
    still[:, 2:] = state.kp[:, 2:]
    assert not np.array_equal(backend.generate(state, still), outputs[3])
    backend.close()
