"""TensorRT: the plan-cache key logic (pure, on the CPU), the clean refusals without a GPU, and —
marked ``tensorrt``, skipped without TensorRT and a GPU — plan builds and parity with torch."""

from __future__ import annotations

import types
from dataclasses import replace

import numpy as np
import pytest

from splinecam.engines.engine_cache import PlanKey, PlanStatus, lookup_plan, plan_path, plan_status, store_plan
from splinecam.engines.errors import BackendUnavailableError

KEY = PlanKey(graph="generator", model_hash="ab" * 32, precision="fp16", gpu_name="NVIDIA GeForce RTX 4090",
              compute_capability="8.9", tensorrt_version="10.12.0", onnx_sha256="cd" * 32)


def record_for(key: PlanKey, plan_sha: str) -> dict:
    from dataclasses import asdict

    return {"format": 1, "key": asdict(key), "plan_sha256": plan_sha}


def test_matching_record_is_valid():
    status, _ = plan_status(KEY, record_for(KEY, "x" * 64), "x" * 64)
    assert status is PlanStatus.VALID


@pytest.mark.parametrize("part,value", [("gpu_name", "NVIDIA A100"), ("compute_capability", "8.0"),
                                        ("tensorrt_version", "11.0.0"), ("precision", "fp32"),
                                        ("model_hash", "ef" * 32), ("onnx_sha256", "00" * 32), ("graph", "keypoints")])
def test_any_differing_key_part_is_stale(part, value):
    built_for = replace(KEY, **{part: value})
    status, reason = plan_status(KEY, record_for(built_for, "x" * 64), "x" * 64)
    assert status is PlanStatus.STALE and part in reason


def test_digest_and_file_name_change_with_every_part():
    names = {KEY.filename()}
    for part, value in [("gpu_name", "A100"), ("compute_capability", "8.0"), ("tensorrt_version", "11.0.0"),
                        ("precision", "fp32"), ("model_hash", "ef" * 32)]:
        names.add(replace(KEY, **{part: value}).filename())
    assert len(names) == 6
    assert "sm89" in KEY.filename() and "trt10.12.0" in KEY.filename()


@pytest.mark.parametrize("record,plan_sha,status", [
    (None, None, PlanStatus.MISSING),
    ("good", None, PlanStatus.MISSING),
    ({}, "x" * 64, PlanStatus.CORRUPT),                       # unreadable record
    ({"format": 99, "key": {}}, "x" * 64, PlanStatus.CORRUPT),
    ("good", "y" * 64, PlanStatus.CORRUPT),                   # plan bytes changed
    (None, "x" * 64, PlanStatus.CORRUPT),                     # plan without a record
])
def test_missing_and_corrupt(record, plan_sha, status):
    rec = record_for(KEY, "x" * 64) if record == "good" else record
    assert plan_status(KEY, rec, plan_sha)[0] is status


def test_store_then_lookup_round_trip_and_corruption(tmp_path):
    assert lookup_plan(KEY, tmp_path)[0] is PlanStatus.MISSING
    path = store_plan(KEY, b"plan-bytes", tmp_path)
    status, _, data = lookup_plan(KEY, tmp_path)
    assert status is PlanStatus.VALID and data == b"plan-bytes"
    assert lookup_plan(replace(KEY, tensorrt_version="11.1.0"), tmp_path)[0] is PlanStatus.MISSING
    path.write_bytes(b"plan-bytez")  # truncated / overwritten plan
    status, _, data = lookup_plan(KEY, tmp_path)
    assert status is PlanStatus.CORRUPT and data is None
    path.with_name(path.name + ".json").write_text("{not json")
    assert lookup_plan(KEY, tmp_path)[0] is PlanStatus.CORRUPT
    # a record that names another key under this file name (copied cache) is stale, never loaded
    store_plan(KEY, b"plan-bytes", tmp_path)
    other = replace(KEY, gpu_name="NVIDIA A100")
    plan_path(other, tmp_path).write_bytes(b"plan-bytes")
    plan_path(other, tmp_path).with_name(plan_path(other, tmp_path).name + ".json").write_text(
        path.with_name(path.name + ".json").read_text())
    assert lookup_plan(other, tmp_path)[0] is PlanStatus.STALE


def test_network_flags_strongly_typed_on_10_and_11():
    from splinecam.engines.backends.tensorrt_runner import _network_flags

    trt10 = types.SimpleNamespace(NetworkDefinitionCreationFlag=types.SimpleNamespace(EXPLICIT_BATCH=0, STRONGLY_TYPED=1))
    trt11 = types.SimpleNamespace(NetworkDefinitionCreationFlag=types.SimpleNamespace())
    assert _network_flags(trt10) == 1 << 1
    assert _network_flags(trt11) == 0


def test_tensorrt_backend_refused_cleanly_without_gpu(golden_model):
    from splinecam.engines.backends import BackendOptions, create_backend
    from splinecam.engines.backends.tensorrt_runner import TensorRTGraphs, tensorrt_unavailable_reason

    if tensorrt_unavailable_reason() is None:
        pytest.skip("TensorRT and a GPU are present")
    with pytest.raises(BackendUnavailableError) as err:
        TensorRTGraphs(golden_model, "cuda", "fp16", BackendOptions())
    assert "\n" not in str(err.value) and "TensorRT" in str(err.value)
    with pytest.raises(BackendUnavailableError):
        create_backend(golden_model, "tensorrt", "cpu", "fp16")


# ----------------------------------------------------------------------------- on a GPU only

def _need_tensorrt():
    from splinecam.engines.backends.tensorrt_runner import tensorrt_unavailable_reason

    reason = tensorrt_unavailable_reason()
    if reason:
        pytest.skip(f"TensorRT path NOT RUN: {reason}")


@pytest.mark.tensorrt
@pytest.mark.gpu
@pytest.mark.parametrize("precision,tol", [("fp32", 2e-3), ("fp16", 5e-2)])
def test_tensorrt_matches_torch_on_golden(tmp_path, golden_model, golden_io, precision, tol):
    _need_tensorrt()
    import torch

    from splinecam.engines.backends import BackendOptions, create_backend
    from splinecam.engines.tpsmm.frame_generator import FrameGenerator, encode_source
    from splinecam.engines.tpsmm.geometry import solve_tps

    backend = create_backend(golden_model, "tensorrt", "cuda", precision, BackendOptions(cache_dir=tmp_path))
    image = (golden_io["source"] * 255).round().astype(np.uint8)
    state = backend.prepare_source(image)
    src = encode_source(golden_model.model, torch.from_numpy(image).permute(2, 0, 1)[None].float() / 255)
    gen = FrameGenerator(golden_model.model, with_bg=True)
    for kp in golden_io["kp_relative"]:
        kp_t = torch.from_numpy(kp[None])
        tps = solve_tps(kp_t, src.kp, gen.num_tps)
        with torch.no_grad():
            want = gen(*src.as_inputs(), kp_t, tps.theta, tps.control_params, torch.eye(3)[None])
        want = (want[0].clamp(0, 1) * 255).round().permute(1, 2, 0).numpy()
        got = backend.generate(state, kp).astype(np.float32)
        assert np.abs(got - want).mean() / 255 <= tol
    # a second backend finds every plan VALID in the cache: nothing is rebuilt
    messages: list[str] = []
    create_backend(golden_model, "tensorrt", "cuda", precision, BackendOptions(cache_dir=tmp_path, progress=messages.append))
    assert not any("building" in m for m in messages)


@pytest.mark.tensorrt
@pytest.mark.gpu
def test_tensorrt_overlapped_pipeline(tmp_path, golden_model, golden_io):
    _need_tensorrt()
    from splinecam.engines.backends import BackendOptions, create_backend

    backend = create_backend(golden_model, "tensorrt", "cuda", "fp16", BackendOptions(cache_dir=tmp_path))
    state = backend.prepare_source((golden_io["source"] * 255).round().astype(np.uint8))
    pipe = backend.graphs.overlapped(state)
    frames = [(f * 255).round().astype(np.uint8) for f in golden_io["driving"]]
    out = [pipe.submit(f) for f in frames] + [pipe.flush()]
    done = [r for r in out if r is not None]
    assert [r.index for r in done] == list(range(len(frames)))
    for r, f in zip(done, frames):
        assert np.abs(r.frame.astype(int) - backend.generate(state, backend.keypoints(f)).astype(int)).max() <= 2


def test_cached_export_dir_names_model_precision_and_exporter(tmp_path, monkeypatch):
    import splinecam.engines.engine_cache as ec

    a = ec.onnx_export_dir("ab" * 32, "fp16", 17, tmp_path)
    assert a.parent == tmp_path / "onnx" and a.name.startswith("abababababababab-fp16-opset17-")
    assert ec.onnx_export_dir("ab" * 32, "fp32", 17, tmp_path) != a
    assert ec.onnx_export_dir("cd" * 32, "fp16", 17, tmp_path) != a
    monkeypatch.setattr(ec, "exporter_fingerprint", lambda: "f" * 64)  # other exporter code → another directory
    assert ec.onnx_export_dir("ab" * 32, "fp16", 17, tmp_path) != a
