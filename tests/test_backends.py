"""Backends against torch fp32 on golden-small: ONNX Runtime within 1e-3 on every golden prediction,
cached-source torch within 1e-5 of the uncached TPSMM.animate; the ``auto`` policy and the
one-line refusals of impossible combinations."""

from __future__ import annotations

import dataclasses

import numpy as np
import pytest

import torch

from splinecam.engines.backends import BackendOptions, create_backend, resolve_choice
from splinecam.engines.cpu import cpu_info
from splinecam.engines.errors import BackendUnavailableError, EngineCacheError
from splinecam.engines.tpsmm.frame_generator import FrameGenerator, encode_source
from splinecam.engines.tpsmm.geometry import solve_tps
from tests.reference_tolerances import golden_tol

ORT_TOL = 1e-3
CACHED_TOL = 1e-5

# (golden prediction, driving keypoints, background params or None)
CASES = [("rel_prediction", "kp_relative", None), ("std_bg_prediction", "kp_driving", "bg_param"),
         ("avd_prediction", "kp_avd", None), ("synth_prediction", "synth_kp_driving", None)]


def golden_export(tmp_path_factory, golden_model, precision: str):
    """The golden-small export, once per session (the same directory test_export.py uses)."""
    from pathlib import Path

    from splinecam.cli import main

    out = tmp_path_factory.getbasetemp() / f"golden-export-{precision}"
    if not (out / "manifest.json").is_file():
        golden = Path(str(golden_model.path)).parent
        assert main(["export", "--checkpoint", str(golden_model.path), "--config", str(golden / "config.yaml"),
                     "--out", str(out), "--precision", precision]) == 0
    return out


def nchw(image_hwc: np.ndarray) -> np.ndarray:
    return np.ascontiguousarray(image_hwc.transpose(2, 0, 1))[None].astype(np.float32)


@pytest.fixture(scope="module")
def ort_backend(tmp_path_factory, golden_model):
    directory = golden_export(tmp_path_factory, golden_model, "fp32")
    return create_backend(golden_model, "onnxruntime", "cpu", "fp32", BackendOptions(onnx_dir=directory))


@pytest.fixture(scope="module")
def torch_cached(golden_model, golden_io):
    model = golden_model.model
    source = torch.from_numpy(nchw(golden_io["source"]))
    return encode_source(model, source), FrameGenerator(model, with_bg=True)


@pytest.fixture(scope="module")
def torch_refs(golden_io, torch_cached):
    """torch fp32 predictions (cached source, batch 1) for every frame of every case: case → [(1,3,S,S)].
    The cached path equals the uncached TPSMM.animate within 1e-5 (test below)."""
    refs = {}
    for pred_key, kp_key, bg_key in CASES:
        kps = golden_io[kp_key]
        refs[pred_key] = [torch_prediction(torch_cached, kps[i], None if bg_key is None else golden_io[bg_key][i])
                          for i in range(len(kps))]
    return refs


@torch.no_grad()
def torch_prediction(torch_cached, kp_driving: np.ndarray, bg: np.ndarray | None) -> np.ndarray:
    src, gen = torch_cached
    kp = torch.from_numpy(np.asarray(kp_driving, np.float32))[None]
    tps = solve_tps(kp, src.kp, gen.num_tps)
    bg_t = torch.eye(3)[None] if bg is None else torch.from_numpy(np.asarray(bg, np.float32))[None]
    return gen(*src.as_inputs(), kp, tps.theta, tps.control_params, bg_t).numpy()


@pytest.mark.parametrize("pred_key,kp_key,bg_key", CASES)
def test_onnxruntime_matches_torch_fp32(ort_backend, torch_refs, golden_io, pred_key, kp_key, bg_key):
    state = ort_backend.encode_source(nchw(golden_io["source"]))
    assert np.abs(state.kp - golden_io["kp_source"][0]).max() <= golden_tol("kp_source")
    kps = golden_io[kp_key]
    for i in range(len(kps)):
        bg = None if bg_key is None else golden_io[bg_key][i]
        got = ort_backend.predict(state, kps[i], bg)
        assert np.abs(got - torch_refs[pred_key][i]).max() <= ORT_TOL, f"{pred_key}[{i}] vs torch"
        assert np.abs(got[0] - golden_io[pred_key][i]).max() <= ORT_TOL, f"{pred_key}[{i}] vs official"


def test_onnxruntime_keypoints_and_background(ort_backend, golden_io):
    for i, frame in enumerate(golden_io["driving"]):
        assert np.abs(ort_backend.keypoints_nchw(nchw(frame)) - golden_io["kp_driving"][i]).max() <= 1e-4
    state = ort_backend.encode_source(nchw(golden_io["source"]))
    bg = ort_backend.graphs.background(nchw(golden_io["source"]), nchw(golden_io["driving"][0]))
    assert np.abs(bg[0] - golden_io["bg_param"][0]).max() <= 1e-4
    assert state.tensors["source_feat0"].dtype == np.float32


@pytest.mark.parametrize("pred_key,kp_key,bg_key", CASES)
@torch.no_grad()
def test_cached_source_matches_uncached_animate(golden_model, torch_cached, golden_io, pred_key, kp_key, bg_key):
    src, _ = torch_cached
    source = torch.from_numpy(nchw(golden_io["source"]))
    kps = golden_io[kp_key]
    for i in [len(kps) - 1]:  # the last frame of each case (the first is ~identical motion), batch 1 on both paths
        bg = None if bg_key is None else golden_io[bg_key][i]
        uncached = golden_model.model.animate(source, src.kp, torch.from_numpy(kps[i][None]),
                                              None if bg is None else torch.from_numpy(bg[None]))
        cached = torch_prediction(torch_cached, kps[i], bg)
        assert np.abs(cached - uncached.numpy()).max() <= CACHED_TOL, f"{pred_key}[{i}]"


@torch.no_grad()
def test_identity_background_is_exactly_no_background(golden_model, torch_cached, golden_io):
    src, gen_bg = torch_cached
    gen = FrameGenerator(golden_model.model, with_bg=False)
    kp = torch.from_numpy(golden_io["kp_relative"][:1])
    tps = solve_tps(kp, src.kp, gen.num_tps)
    without = gen(*src.as_inputs(), kp, tps.theta, tps.control_params)
    with_eye = gen_bg(*src.as_inputs(), kp, tps.theta, tps.control_params, torch.eye(3)[None])
    assert torch.equal(without, with_eye)


def test_uint8_interface_and_avatar_switch(ort_backend, golden_io):
    image = (golden_io["source"] * 255).round().astype(np.uint8)
    sessions = dict(ort_backend.graphs.sessions)
    state = ort_backend.prepare_source(image)
    kp = ort_backend.keypoints((golden_io["driving"][0] * 255).round().astype(np.uint8))
    assert kp.shape == (50, 2) and kp.dtype == np.float32
    frame = ort_backend.generate(state, kp)
    assert frame.shape == image.shape and frame.dtype == np.uint8
    other = ort_backend.prepare_source(image[:, ::-1].copy())  # switching avatars: no session is rebuilt
    assert ort_backend.graphs.sessions == sessions
    assert not np.array_equal(other.tensors["source_feat0"], state.tensors["source_feat0"])
    assert ort_backend.avd(state.kp, kp).shape == (50, 2)
    assert ort_backend.background(state, image).shape == (3, 3)


def test_export_dir_of_another_model_is_refused(tmp_path_factory, golden_model):
    from dataclasses import replace

    directory = golden_export(tmp_path_factory, golden_model, "fp32")
    other = replace(golden_model, model_hash="0" * 64)
    with pytest.raises(EngineCacheError, match="another model"):
        create_backend(other, "onnxruntime", "cpu", "fp32", BackendOptions(onnx_dir=directory))
    with pytest.raises(EngineCacheError, match="fp32"):
        create_backend(golden_model, "onnxruntime", "cpu", "fp16", BackendOptions(onnx_dir=directory))


def test_create_backend_onnxruntime(tmp_path_factory, golden_model):
    directory = golden_export(tmp_path_factory, golden_model, "fp32")
    backend = create_backend(golden_model, "onnxruntime", "cpu", "auto", BackendOptions(onnx_dir=directory))
    assert backend.describe() == "onnxruntime/cpu/fp32"


def test_auto_policy_on_cpu(monkeypatch):
    import splinecam.engines.backends as b

    monkeypatch.setattr(b, "_cuda_available", lambda: False)
    monkeypatch.setattr(b, "_cpu_has_bf16", lambda: True)
    assert resolve_choice("auto", "auto", "auto") == ("torch", "cpu", "bf16")
    assert resolve_choice("onnxruntime", "auto", "auto") == ("onnxruntime", "cpu", "fp32")
    assert resolve_choice("auto", "cpu", "fp32") == ("torch", "cpu", "fp32")
    assert resolve_choice("auto", "cpu", "fp16") == ("onnxruntime", "cpu", "fp16")
    monkeypatch.setattr(b, "_cpu_has_bf16", lambda: False)
    assert resolve_choice("auto", "cpu", "auto") == ("torch", "cpu", "fp32")


def test_auto_policy_on_cuda(monkeypatch):
    import splinecam.engines.backends as b

    monkeypatch.setattr(b, "_cuda_available", lambda: True)
    monkeypatch.setattr(b, "_tensorrt_ready", lambda: True)
    assert resolve_choice("auto", "auto", "auto") == ("tensorrt", "cuda", "fp16")
    monkeypatch.setattr(b, "_tensorrt_ready", lambda: False)
    monkeypatch.setattr(b, "_ort_has_cuda", lambda: False)
    assert resolve_choice("auto", "auto", "auto") == ("torch", "cuda", "fp16")
    monkeypatch.setattr(b, "_ort_has_cuda", lambda: True)
    assert resolve_choice("auto", "cuda", "auto") == ("onnxruntime", "cuda", "fp16")


@pytest.mark.parametrize("backend,device,precision", [
    ("onnxruntime", "cpu", "bf16"), ("torch", "cpu", "fp16"), ("tensorrt", "cpu", "auto"), ("nonsense", "cpu", "fp32")])
def test_impossible_combinations_raise_one_line(monkeypatch, backend, device, precision):
    import splinecam.engines.backends as b

    monkeypatch.setattr(b, "_cuda_available", lambda: False)
    with pytest.raises(BackendUnavailableError) as err:
        resolve_choice(backend, device, precision)
    assert "\n" not in str(err.value)


def test_cuda_device_without_gpu(monkeypatch, golden_model):
    import splinecam.engines.backends as b

    monkeypatch.setattr(b, "_cuda_available", lambda: False)
    for backend in ("torch", "onnxruntime", "tensorrt", "auto"):
        with pytest.raises(BackendUnavailableError, match="no CUDA GPU"):
            create_backend(golden_model, backend, "cuda", "auto")


def test_cpu_bf16_uses_the_compiled_path_and_falls_back(monkeypatch, golden_model):
    import splinecam.engines.backends as b
    import splinecam.engines.backends.onnxruntime_runner as ort_runner
    import splinecam.engines.backends.registry as registry
    import splinecam.engines.backends.torch_compiled as tc
    from splinecam.engines.backends.torch_runner import TorchGraphs

    monkeypatch.setattr(b, "_cpu_has_bf16", lambda: True)
    monkeypatch.setattr(b, "_cuda_available", lambda: False)
    monkeypatch.setattr(registry, "_torch_requirement", lambda device, precision: None)
    monkeypatch.setattr(registry, "REGISTRY", {**registry.REGISTRY, "torch": dataclasses.replace(
        registry.REGISTRY["torch"], requirement=lambda device, precision: None)})
    monkeypatch.setattr(b, "REGISTRY", registry.REGISTRY)
    made = []

    class Fake(TorchGraphs):
        def __init__(self, loaded, device, precision, options):
            made.append(precision)
            super().__init__(loaded, device, "fp32", options)
            self.precision = precision

    monkeypatch.setattr(tc, "CompiledTorchGraphs", Fake)
    assert isinstance(create_backend(golden_model, "auto", "cpu", "auto").graphs, Fake) and made == ["bf16"]

    class Broken:
        def __init__(self, *a, **k):
            raise RuntimeError("InductorError: no C++ compiler")

    monkeypatch.setattr(tc, "CompiledTorchGraphs", Broken)
    with pytest.warns(UserWarning, match="eager bf16"):
        backend = create_backend(golden_model, "torch", "cpu", "bf16")
    assert type(backend.graphs) is TorchGraphs and backend.precision == "bf16"
    ort_made = []

    class FakeOrt(TorchGraphs):
        def __init__(self, loaded, device, precision, options):
            ort_made.append((device, precision))
            super().__init__(loaded, device, precision, options)

    monkeypatch.setattr(ort_runner, "OnnxRuntimeGraphs", FakeOrt)
    with pytest.warns(UserWarning, match="onnxruntime fp32"):
        assert isinstance(create_backend(golden_model, "auto", "cpu", "auto").graphs, FakeOrt)
    assert ort_made == [("cpu", "fp32")]
    monkeypatch.setattr(tc, "CompiledTorchGraphs", Fake)
    made.clear()
    backend = create_backend(golden_model, "torch", "cpu", "bf16", BackendOptions(compile=False))
    assert type(backend.graphs) is TorchGraphs and made == []


@pytest.mark.slow
@pytest.mark.skipif(not cpu_info().has_bf16, reason=f"the compiled bf16 path needs AVX-512 bf16 / AMX; this CPU: {cpu_info().label}")
def test_compiled_bf16_cpu_path_keeps_35db(golden_model, golden_io):
    """Compiles golden-small with inductor (a minute or more on 2 cores)."""

    backend = create_backend(golden_model, "torch", "cpu", "bf16", BackendOptions(progress=lambda _m: None))
    assert backend.describe().endswith("+compiled")
    image = (golden_io["source"] * 255).round().astype(np.uint8)
    state = backend.prepare_source(image)
    assert np.abs(state.kp - golden_io["kp_source"][0]).max() <= 1e-2
    for pred_key, kp_key, _ in CASES[:1] + CASES[3:]:
        for kp, want in zip(golden_io[kp_key], golden_io[pred_key]):
            got = backend.generate(state, kp).astype(np.float32) / 255
            mse = float(np.mean((got - want.transpose(1, 2, 0)) ** 2))
            assert 10 * np.log10(1 / mse) >= 35.0, pred_key


def test_onnxruntime_fp16_graphs_keep_35db(tmp_path_factory, golden_model, golden_io):
    """The fp16 graphs (what TensorRT builds from) stay ≥ 35 dB PSNR against the official outputs."""
    backend = create_backend(golden_model, "onnxruntime", "cpu", "fp16",
                             BackendOptions(onnx_dir=golden_export(tmp_path_factory, golden_model, "fp16")))
    state = backend.encode_source(nchw(golden_io["source"]))
    assert state.tensors["source_feat0"].dtype == np.float16 and state.tensors["source_heat"].dtype == np.float32
    for pred_key, kp_key, bg_key in CASES:
        i = len(golden_io[kp_key]) - 1
        got = backend.predict(state, golden_io[kp_key][i], None if bg_key is None else golden_io[bg_key][i])
        mse = float(np.mean((got[0].astype(np.float64) - golden_io[pred_key][i]) ** 2))
        assert 10 * np.log10(1 / mse) >= 35.0, pred_key


@pytest.fixture(scope="module")
def ov_backend(tmp_path_factory, golden_model):
    pytest.importorskip("openvino", reason="OpenVINO is not installed")
    directory = golden_export(tmp_path_factory, golden_model, "fp32")
    return create_backend(golden_model, "openvino", "cpu", "fp32", BackendOptions(onnx_dir=directory))


@pytest.mark.parametrize("pred_key,kp_key,bg_key", CASES)
def test_openvino_fp32_matches_torch(ov_backend, torch_refs, golden_io, pred_key, kp_key, bg_key):
    """OpenVINO's CPU plugin at f32 (INFERENCE_PRECISION_HINT set: it would run bf16 on bf16 CPUs)."""
    state = ov_backend.encode_source(nchw(golden_io["source"]))
    assert np.abs(state.kp - golden_io["kp_source"][0]).max() <= 1e-4
    kps = golden_io[kp_key]
    for i in (0, len(kps) - 1):
        bg = None if bg_key is None else golden_io[bg_key][i]
        got = ov_backend.predict(state, kps[i], bg)
        assert np.abs(got - torch_refs[pred_key][i]).max() <= ORT_TOL, f"{pred_key}[{i}] vs torch"


def test_openvino_binds_inputs_anew_only_when_their_arrays_change(ov_backend, golden_io):
    """The OpenVINO runner binds each input as a view and keeps the cached source arrays bound between frames:
    alternating two avatars, and a feed array changed in place, give what a first call on each gives."""
    src = nchw(golden_io["source"])
    a = ov_backend.encode_source(src)
    b = ov_backend.encode_source(np.ascontiguousarray(src[:, :, :, ::-1]))   # another avatar: the mirror image
    kp0, kp1 = golden_io["kp_relative"][0], golden_io["kp_relative"][-1]
    first = {"a0": ov_backend.predict(a, kp0).copy()}
    first["b1"] = ov_backend.predict(b, kp1).copy()
    first["a1"] = ov_backend.predict(a, kp1).copy()
    first["b0"] = ov_backend.predict(b, kp0).copy()
    assert np.abs(first["a0"] - first["b0"]).max() > 0.05                     # the avatars do differ
    for key in ("a0", "b1", "b0", "a1", "a0"):
        state = a if key[0] == "a" else b
        got = ov_backend.predict(state, kp0 if key[1] == "0" else kp1)
        np.testing.assert_array_equal(got, first[key])
    graphs = ov_backend.graphs
    feeds = {**a.tensors, **{k: np.array(v) for k, v in ov_backend.frame_feeds(a, kp1, None).items()}}  # own copies:
    # the feeds may be views of golden_io's arrays, which the later tests read
    before = graphs.run("generator", feeds)["prediction"].copy()
    for name, value in ov_backend.frame_feeds(a, kp0, None).items():
        feeds[name][...] = value                                              # the same arrays, new contents
    np.testing.assert_array_equal(graphs.run("generator", feeds)["prediction"], first["a0"])
    assert np.abs(before - first["a0"]).max() > 0.01


def test_openvino_caches_compiled_models_by_device_precision_and_model(tmp_path):
    pytest.importorskip("openvino", reason="OpenVINO is not installed")
    from splinecam.engines.backends.openvino_runner import compiled_cache_dir

    a = compiled_cache_dir("ab" * 32, "cpu", "fp32", tmp_path)
    assert a.parent == tmp_path / "openvino" and "cpu" in a.name and "fp32" in a.name and "-ov" in a.name
    assert a != compiled_cache_dir("ab" * 32, "intel-gpu", "fp32", tmp_path)
    assert a != compiled_cache_dir("ab" * 32, "cpu", "bf16", tmp_path)
    assert a != compiled_cache_dir("cd" * 32, "cpu", "fp32", tmp_path)


def test_intel_gpu_is_refused_in_one_line_without_one(golden_model):
    pytest.importorskip("openvino", reason="OpenVINO is not installed")
    import openvino as ov

    if "GPU" in ov.Core().available_devices:
        pytest.skip("an Intel GPU is present")
    with pytest.raises(BackendUnavailableError) as err:
        create_backend(golden_model, "openvino", "intel-gpu", "fp16")
    assert "\n" not in str(err.value) and "Intel GPU" in str(err.value)
    assert resolve_choice("auto", "intel-gpu", "auto") == ("openvino", "intel-gpu", "fp16")
