"""TensorRT: the plan-cache key logic (pure, on the CPU), the clean refusals without a GPU; the runner
itself on the CPU against a fake ``tensorrt`` module (tests/fake_tensorrt.py) and the recording stream
device — builder settings, network flags, one logger, contexts per stream, binding checks, buffer
lifetimes, the overlapped pipeline with the background graph — and, marked ``tensorrt`` (skipped
without TensorRT and a GPU), plan builds and parity with torch on a real GPU."""

from __future__ import annotations

import types
from dataclasses import replace

import numpy as np
import pytest

from splinecam.engines.engine_cache import PlanKey, PlanStatus, lookup_plan, plan_path, plan_status, store_plan
from splinecam.engines.errors import BackendUnavailableError

KEY = PlanKey(graph="generator", model_hash="ab" * 32, precision="fp16", gpu_name="NVIDIA GeForce RTX 4090",
              compute_capability="8.9", tensorrt_version="10.12.0", onnx_sha256="cd" * 32,
              builder_settings='{"optimization_level":3,"strongly_typed":true,"tf32":false,"workspace_bytes":2147483648}')


def record_for(key: PlanKey, plan_sha: str) -> dict:
    from dataclasses import asdict

    return {"format": 1, "key": asdict(key), "plan_sha256": plan_sha}


def test_matching_record_is_valid():
    status, _ = plan_status(KEY, record_for(KEY, "x" * 64), "x" * 64)
    assert status is PlanStatus.VALID


@pytest.mark.parametrize("part,value", [("gpu_name", "NVIDIA A100"), ("compute_capability", "8.0"),
                                        ("tensorrt_version", "11.0.0"), ("precision", "fp32"),
                                        ("model_hash", "ef" * 32), ("onnx_sha256", "00" * 32), ("graph", "keypoints"),
                                        ("builder_settings", '{"tf32":true}')])
def test_any_differing_key_part_is_stale(part, value):
    built_for = replace(KEY, **{part: value})
    status, reason = plan_status(KEY, record_for(built_for, "x" * 64), "x" * 64)
    assert status is PlanStatus.STALE and part in reason


def test_digest_and_file_name_change_with_every_part():
    names = {KEY.filename()}
    for part, value in [("gpu_name", "A100"), ("compute_capability", "8.0"), ("tensorrt_version", "11.0.0"),
                        ("precision", "fp32"), ("model_hash", "ef" * 32), ("builder_settings", "{}")]:
        names.add(replace(KEY, **{part: value}).filename())
    assert len(names) == 7
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
    """Issue 19 item 8: 10.x needs 1 << STRONGLY_TYPED; 11.0 / 11.1 keep STRONGLY_TYPED (value 0,
    deprecated, ignored: every network is strongly typed), and nothing is passed there."""
    from splinecam.engines.backends.tensorrt_runner import _network_flags
    from splinecam.engines.errors import EngineCacheError

    trt10 = types.SimpleNamespace(__version__="10.12.0.36",
                                  NetworkDefinitionCreationFlag=types.SimpleNamespace(EXPLICIT_BATCH=0, STRONGLY_TYPED=1))
    trt11 = types.SimpleNamespace(__version__="11.1.0.106",
                                  NetworkDefinitionCreationFlag=types.SimpleNamespace(STRONGLY_TYPED=0))
    assert _network_flags(trt10) == 1 << 1
    assert _network_flags(trt11) == 0
    too_old = types.SimpleNamespace(__version__="10.0.0", NetworkDefinitionCreationFlag=types.SimpleNamespace())
    with pytest.raises(EngineCacheError):
        _network_flags(too_old)


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
@pytest.mark.parametrize("background", [False, True])
def test_tensorrt_overlapped_pipeline(tmp_path, golden_model, golden_io, background):
    _need_tensorrt()
    from splinecam.engines.backends import BackendOptions, create_backend

    backend = create_backend(golden_model, "tensorrt", "cuda", "fp16", BackendOptions(cache_dir=tmp_path))
    state = backend.prepare_source((golden_io["source"] * 255).round().astype(np.uint8))
    pipe = backend.overlapped(background=background)
    frames = [(f * 255).round().astype(np.uint8) for f in golden_io["driving"]]
    out = [pipe.submit(f, source=state) for f in frames] + [pipe.flush()]
    done = [r for r in out if r is not None]
    assert [r.index for r in done] == list(range(len(frames)))
    for r, f in zip(done, frames):
        bg = backend.background(state, f) if background else None
        want = backend.generate(state, backend.keypoints(f), bg)
        assert np.abs(r.frame.astype(int) - want.astype(int)).max() <= 2
    backend.close()


def test_cached_export_dir_names_model_precision_and_exporter(tmp_path, monkeypatch):
    import splinecam.engines.engine_cache as ec

    a = ec.onnx_export_dir("ab" * 32, "fp16", 17, tmp_path)
    assert a.parent == tmp_path / "onnx" and a.name.startswith("abababababababab-fp16-opset17-")
    assert ec.onnx_export_dir("ab" * 32, "fp32", 17, tmp_path) != a
    assert ec.onnx_export_dir("cd" * 32, "fp16", 17, tmp_path) != a
    monkeypatch.setattr(ec, "exporter_fingerprint", lambda: "f" * 64)  # other exporter code → another directory
    assert ec.onnx_export_dir("ab" * 32, "fp16", 17, tmp_path) != a


@pytest.mark.tensorrt
@pytest.mark.gpu
def test_tensorrt_fp32_plan_is_float32_not_tf32(tmp_path, golden_model, golden_io):
    """Issue 19 item 1 on a GPU: with TF32 off, the fp32 plan's prediction matches torch fp32 (TF32 off
    too) to float32 accuracy; TF32's 10-bit mantissas would put it around 1e-3."""
    _need_tensorrt()
    import torch

    from splinecam.engines.backends import BackendOptions, create_backend

    torch.backends.cudnn.allow_tf32 = False
    torch.backends.cuda.matmul.allow_tf32 = False
    trt_backend = create_backend(golden_model, "tensorrt", "cuda", "fp32", BackendOptions(cache_dir=tmp_path))
    torch_backend = create_backend(golden_model, "torch", "cuda", "fp32")
    image = (golden_io["source"] * 255).round().astype(np.uint8)
    a, b = trt_backend.prepare_source(image), torch_backend.prepare_source(image)
    for kp in golden_io["kp_relative"]:
        assert np.abs(trt_backend.predict(a, kp) - torch_backend.predict(b, kp)).max() <= 5e-4


# ----------------------------------------------------------------------------- the runner, on the CPU
#
# A fake ``tensorrt`` module (tests/fake_tensorrt.py) and the recording stream device: the runner's own
# code runs for real — builder calls, plan keys, engine I/O, one context per stream, binding checks,
# pinned / device buffers, the overlapped pipeline — on CPU tensors. What this cannot show (real
# kernels, real streams, TensorRT's own checks) is what the tests marked ``tensorrt`` above are for.

import fake_tensorrt  # noqa: E402  (tests/ is on sys.path under pytest)

TINY_SIZE, TINY_TPS = 16, 2


@pytest.fixture
def fake_trt(monkeypatch):
    import sys

    import splinecam.engines.backends.tensorrt_runner as tr

    trt = fake_tensorrt.make_fake_tensorrt()
    trt.compute.update(fake_tensorrt.tiny_compute(TINY_TPS * 5))
    monkeypatch.setitem(sys.modules, "tensorrt", trt)
    monkeypatch.setattr(tr, "_LOGGER", None)  # the process-wide logger belongs to the module in use
    monkeypatch.setattr(tr, "gpu_identity", lambda device_index=0: ("NVIDIA Fake GPU", "9.0"))
    return trt


def tiny_backend(background=True, precision="fp16"):
    from splinecam.engines.backends.base import Backend
    from splinecam.engines.backends.tensorrt_runner import TensorRTGraphs
    from splinecam.engines.cuda_pipeline import RecordingDevice
    from splinecam.engines.tpsmm.config import ModelConfig

    config = ModelConfig(name="tiny", num_tps=TINY_TPS, image_size=TINY_SIZE, bg=background)
    device = RecordingDevice()
    graphs = TensorRTGraphs.from_plans(config, precision, fake_tensorrt.tiny_plans(TINY_SIZE, TINY_TPS, background),
                                       device)
    return Backend(config, graphs, None, has_bg=background), device


def tiny_frames(n, seed=0):
    rng = np.random.default_rng(seed)
    return [rng.integers(40 + 10 * i, 80 + 10 * i, (TINY_SIZE, TINY_SIZE, 3), dtype=np.uint8) for i in range(n)]


def test_plans_are_built_with_tf32_off_and_the_settings_the_key_names(fake_trt, tmp_path):
    """Issue 19 item 1: BuilderFlag.TF32 is on by default (the fake, like 10.12 / 11.x, starts with it):
    the builder clears it, sets the workspace and optimisation level — exactly what the key records."""
    import json

    from splinecam.engines.backends.tensorrt_runner import DEFAULT_BUILDER, BuilderSettings, build_plan, plan_key

    onnx = tmp_path / "generator.onnx"
    onnx.write_bytes(b"onnx")
    built = json.loads(build_plan(onnx, DEFAULT_BUILDER))
    assert built == {"onnx": str(onnx), "flags": 1 << 1, "tf32": False, "workspace": 2 << 30, "level": 3}
    assert fake_trt.record.configs[-1].get_flag(fake_trt.BuilderFlag.TF32) is False
    other = BuilderSettings(tf32=True, workspace_bytes=1 << 30, optimization_level=5)
    built = json.loads(build_plan(onnx, other))
    assert (built["tf32"], built["workspace"], built["level"]) == (True, 1 << 30, 5)
    key = plan_key("generator", "ab" * 32, "fp32", "cd" * 32, DEFAULT_BUILDER)
    assert json.loads(key.builder_settings) == {"tf32": False, "workspace_bytes": 2 << 30, "optimization_level": 3,
                                                "strongly_typed": True}


@pytest.mark.parametrize("change", [{"tf32": True}, {"workspace_bytes": 1 << 30}, {"optimization_level": 4},
                                    {"strongly_typed": False}])
def test_any_builder_setting_changes_the_plan_key(fake_trt, change):
    """Issue 19 item 7: a plan built with other builder settings is stale, and lives under another name."""
    from splinecam.engines.backends.tensorrt_runner import DEFAULT_BUILDER, plan_key

    want = plan_key("generator", "ab" * 32, "fp32", "cd" * 32, DEFAULT_BUILDER)
    built_for = plan_key("generator", "ab" * 32, "fp32", "cd" * 32, replace(DEFAULT_BUILDER, **change))
    assert built_for.filename() != want.filename()
    status, reason = plan_status(want, record_for(built_for, "x" * 64), "x" * 64)
    assert status is PlanStatus.STALE and "builder_settings" in reason


def test_cached_plans_are_rebuilt_when_a_builder_setting_changes(fake_trt, tmp_path):
    from splinecam.engines.backends.tensorrt_runner import DEFAULT_BUILDER, plans_for
    from splinecam.engines.export.manifest import GraphInfo

    (tmp_path / "g.onnx").write_bytes(b"onnx")
    manifest = types.SimpleNamespace(graphs={"generator": GraphInfo(name="generator", file="g.onnx", sha256="cd" * 32,
                                                                    inputs=[], outputs=[])},
                                     graph_path=lambda d, n: d / "g.onnx")
    said: list[str] = []
    cache = tmp_path / "plans"
    first = plans_for(manifest, tmp_path, "ab" * 32, "fp32", cache, DEFAULT_BUILDER, said.append)
    assert len(fake_trt.record.builders) == 1
    again = plans_for(manifest, tmp_path, "ab" * 32, "fp32", cache, DEFAULT_BUILDER, said.append)
    assert again == first and len(fake_trt.record.builders) == 1           # VALID: loaded, not rebuilt
    plans_for(manifest, tmp_path, "ab" * 32, "fp32", cache, replace(DEFAULT_BUILDER, tf32=True), said.append)
    assert len(fake_trt.record.builders) == 2                               # other settings: built anew
    assert any("missing" in m for m in said)  # (another file name: the old plan is never even read)


def test_one_logger_for_every_builder_parser_and_runtime(fake_trt, tmp_path):
    """Issue 19 item 9: one process-wide trt.Logger."""
    from splinecam.engines.backends.tensorrt_runner import build_plan

    (tmp_path / "a.onnx").write_bytes(b"onnx")
    build_plan(tmp_path / "a.onnx")
    build_plan(tmp_path / "a.onnx")
    tiny_backend()
    tiny_backend()
    rec = fake_trt.record
    assert len(rec.loggers) == 1
    assert {id(o.logger) for o in (*rec.builders, *rec.parsers, *rec.runtimes)} == {id(rec.loggers[0])}
    assert len(rec.builders) == 2 and len(rec.runtimes) == 2


class FakeTensor:
    """What check_binding reads of a tensor."""

    def __init__(self, device, shape=(1, 3, 4, 4), dtype=None, ptr=0x10000, contiguous=True):
        import torch

        self.device, self.shape, self.dtype = torch.device(device), shape, dtype or torch.float32
        self._ptr, self._contiguous = ptr, contiguous

    def data_ptr(self):
        return self._ptr

    def is_contiguous(self):
        return self._contiguous


@pytest.mark.parametrize("tensor,message", [
    (None, "no tensor"),
    (FakeTensor("cpu"), "is on cpu, the plan runs on cuda:0"),
    (FakeTensor("cuda:1"), "is on cuda:1"),
    (FakeTensor("cuda:0", shape=(1, 3, 4, 5)), "the plan expects"),
    (FakeTensor("cuda:0", contiguous=False), "not contiguous"),
    (FakeTensor("cuda:0", ptr=0x10000 + 64), "not 256-byte aligned"),
])
def test_bindings_are_checked_before_tensorrt_sees_them(tensor, message):
    """Issue 19 item 6: device (a CPU tensor, another GPU), shape / dtype / contiguity, 256-byte alignment."""
    import torch

    from splinecam.engines.backends.tensorrt_runner import check_binding
    from splinecam.engines.errors import EngineCacheError

    with pytest.raises(EngineCacheError, match=message):
        check_binding("keypoints", "image", tensor, (1, 3, 4, 4), torch.float32, torch.device("cuda", 0))
    check_binding("keypoints", "image", FakeTensor("cuda:0"), (1, 3, 4, 4), torch.float32, torch.device("cuda", 0))


def test_a_view_into_another_buffer_and_a_refused_address_are_errors(fake_trt, monkeypatch):
    import torch

    from splinecam.engines.errors import EngineCacheError

    backend, device = tiny_backend()
    eng, stream = backend.graphs.engines["keypoints"], backend.graphs.stream
    k = TINY_TPS * 5
    good = {"image": device.empty((1, 3, TINY_SIZE, TINY_SIZE), torch.float32), "kp": device.empty((1, k, 2), torch.float32)}
    eng.enqueue(good, stream)
    big = device.empty((2, 3, TINY_SIZE, TINY_SIZE), torch.float32)
    with pytest.raises(EngineCacheError, match="aligned"):
        eng.enqueue({**good, "image": big.view(-1)[4:4 + 3 * TINY_SIZE ** 2].view(1, 3, TINY_SIZE, TINY_SIZE)}, stream)
    ctx = eng.context_for(stream)
    monkeypatch.setattr(ctx, "set_tensor_address", lambda name, address: False)
    with pytest.raises(EngineCacheError, match="refused the address"):
        eng.enqueue(good, stream)
    monkeypatch.setattr(ctx, "set_tensor_address", lambda name, address: True)
    monkeypatch.setattr(ctx, "execute_async_v3", lambda handle: False)
    with pytest.raises(EngineCacheError, match="failed to run"):
        eng.enqueue(good, stream)


def run_pipeline(backend, state, frames, background):
    pipe = backend.overlapped(background=background)
    out = [pipe.submit(f, source=state) for f in frames] + [pipe.flush()]
    return pipe, [r for r in out if r is not None]


@pytest.mark.parametrize("background", [False, True])
def test_overlapped_pipeline_gives_the_synchronous_frames(fake_trt, background):
    """The two-stream path (upload + uint8→float on the 'device', keypoints, host TPS solve, generator,
    float→uint8) gives exactly the synchronous path's frames, in order; with ``background`` the
    background graph's motion reaches the generator (issue 19 item 12)."""
    backend, _ = tiny_backend(background=True)
    state = backend.prepare_source(tiny_frames(1, seed=9)[0])
    frames = tiny_frames(5)
    _, done = run_pipeline(backend, state, frames, background)
    assert [r.index for r in done] == list(range(5))
    for r, f in zip(done, frames):
        kp = backend.keypoints(f)
        np.testing.assert_array_equal(r.kp, kp)
        bg = backend.background(state, f) if background else None
        np.testing.assert_array_equal(r.frame, backend.generate(state, kp, bg))
    if background:  # and the motion is not the identity: the test can tell the two apart
        assert abs(backend.background(state, frames[0])[0, 2]) > 1e-3


def test_background_runs_on_the_keypoint_stream_and_feeds_the_generator(fake_trt):
    """Issue 19 item 12: per frame, the background graph runs on the kp stream before kp_done is recorded
    (the generator waits on kp_done), and the generator's bg_param is that slot's background output;
    a pose ticket (no camera frame) binds the identity."""
    backend, device = tiny_backend(background=True)
    state = backend.prepare_source(tiny_frames(1, seed=9)[0])
    pipe = backend.overlapped(background=True)
    handles = {"kp": pipe.kp_stream.handle, "gen": pipe.gen_stream.handle}
    t0 = pipe.keypoints(tiny_frames(1)[0], source=state)
    pipe.generate(t0, t0.kp)
    pose = pipe.pose(t0.kp, source=state)
    pipe.collect(t0)
    pipe.collect(pose)
    runs = [(g, h, a) for g, h, a, _ctx in fake_trt.record.executions if h in handles.values()]
    assert [(g, h) for g, h, _a in runs] == [("keypoints", handles["kp"]), ("background", handles["kp"]),
                                             ("generator", handles["gen"]), ("generator", handles["gen"])]
    stages = pipe.stages
    assert runs[1][2]["bg_param"] == stages.d_bg[0].data_ptr() == runs[2][2]["bg_param"]
    assert runs[3][2]["bg_param"] == stages.identity.data_ptr()
    log = device.log
    kp_launch = log.index(("launch", "kp", "kp[0]"))
    kp_done = log.index(("record", "kp_done/0", "kp", "kp[0]"))
    assert all(e[0] == "keep_alive" for e in log[kp_launch + 1:kp_done])   # background is inside kp[0]'s launch
    assert ("keep_alive", "kp", state.tensors["source"].data_ptr()) in log[kp_launch:kp_done]
    assert log.index(("stream_wait", "gen", "kp_done/0", "kp[0]")) < log.index(("launch", "gen", "gen[0]"))
    assert ("keep_alive", "gen", stages.d_bg[0].data_ptr()) in log


def test_one_execution_context_per_stream(fake_trt):
    """Issue 19 item 2: the synchronous calls, the pipeline's keypoint stream and its generator stream each
    have their own context of an engine; no context ever runs on two streams."""
    backend, _ = tiny_backend(background=True)
    state = backend.prepare_source(tiny_frames(1, seed=9)[0])
    backend.keypoints(tiny_frames(1)[0])
    backend.generate(state, backend.keypoints(tiny_frames(1)[0]))
    pipe, _ = run_pipeline(backend, state, tiny_frames(4), background=True)
    second, _ = run_pipeline(backend, state, tiny_frames(2), background=False)
    sync = backend.graphs.stream.handle
    by_graph: dict[str, set] = {}
    for ctx in fake_trt.record.contexts:
        assert len(set(ctx.handles)) == 1, ctx.engine.graph      # one stream per context
        by_graph.setdefault(ctx.engine.graph, set()).add(ctx.handles[0])
    assert by_graph["keypoints"] == {sync, pipe.kp_stream.handle, second.kp_stream.handle}
    assert by_graph["generator"] == {sync, pipe.gen_stream.handle, second.gen_stream.handle}
    assert by_graph["background"] == {pipe.kp_stream.handle}
    assert len({sync, pipe.kp_stream.handle, pipe.gen_stream.handle, second.kp_stream.handle}) == 4


def test_buffers_across_streams_are_kept_alive_and_close_waits_first(fake_trt):
    """Issue 19 item 3: buffers are allocated for the stream that writes them; the avatar's source tensors
    (made on the runner's stream) are record_stream-ed for the generator stream before it reads them;
    closing waits for every stream before contexts, buffers and engines go."""
    backend, device = tiny_backend(background=True)
    state = backend.prepare_source(tiny_frames(1, seed=9)[0])
    pipe, _ = run_pipeline(backend, state, tiny_frames(3), background=True)
    log = device.log
    allocated = {ptr: stream for kind, stream, ptr in (e for e in log if e[0] == "alloc")}
    for name, tensor in state.tensors.items():
        assert allocated[tensor.data_ptr()] == "sync", name
    stages = pipe.stages
    assert {allocated[t["prediction"].data_ptr()] for t in stages.d_pred} == {"gen"}
    assert {allocated[t["kp"].data_ptr()] for t in stages.d_kp} == {"kp"}
    assert {allocated[t.data_ptr()] for t in stages.d_img} == {"kp"}
    for n in range(3):   # before each generator launch, the source tensors it binds are kept alive for "gen"
        launch = log.index(("launch", "gen", f"gen[{n}]"))
        kept = {e[2] for e in log[launch:] if e[:2] == ("keep_alive", "gen")}
        assert {t.data_ptr() for t in state.tensors.values() if t.dtype.is_floating_point} <= kept
    generator = backend.graphs.engines["generator"]
    assert set(generator._contexts) == {pipe.gen_stream.handle}
    backend.close()
    waits = [e for e in log if e[0] == "host_wait" and e[2] == "close"]
    assert {e[1] for e in waits} >= {"gen_done/0", "gen_done/1", "kp_done/0", "drain/sync"}
    assert log.index(("host_wait", "drain/sync", "close")) > max(log.index(e) for e in waits if e[1] != "drain/sync")
    assert generator._contexts == {} and generator.engine is None and backend.graphs.engines == {}
    assert pipe.closed and stages.d_pred == []


def test_tensorrt_extra_never_swaps_torch():
    """Issue 19 item 11: the [tensorrt] extra is TensorRT + the [torch] extra, nothing that pins torch
    (torch-tensorrt pins one torch minor version) and nothing unused (cuda-python); README says why."""
    import ast
    import configparser
    from pathlib import Path

    repo = Path(__file__).resolve().parents[1]
    cfg = configparser.ConfigParser()
    cfg.read(repo / "setup.cfg")
    extras = {name: [r.strip() for r in value.splitlines() if r.strip()]
              for name, value in cfg["options.extras_require"].items()}
    assert extras["tensorrt"] == ["tensorrt>=10.12", "splinecam[torch]"]
    every = [*cfg["options"]["install_requires"].split(), *(r for reqs in extras.values() for r in reqs)]
    assert not [r for r in every if r.lower().replace("_", "-").startswith(("torch-tensorrt", "cuda-python"))]
    torch_req = next(r for r in extras["torch"] if r.startswith("torch"))
    assert "<" not in torch_req and "==" not in torch_req           # an installed torch >= 2.1 is kept
    for path in repo.rglob("*.py"):
        if any(part in (".git", "build") for part in path.parts):
            continue
        for node in ast.walk(ast.parse(path.read_text())):
            names = [a.name for a in node.names] if isinstance(node, ast.Import) else \
                [node.module or ""] if isinstance(node, ast.ImportFrom) else []
            assert not [n for n in names if n.split(".")[0] in ("torch_tensorrt", "cuda")], path
    readme = (repo / "README.md").read_text()
    assert "torch-tensorrt is not in it" in readme and "pins one torch minor version" in readme
    assert "`cuda-python` is not in it" in readme
