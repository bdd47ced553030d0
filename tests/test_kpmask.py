"""The keypoint-mask model, ``kpmask-256`` (engines/tpsmm/kpmask.py; issue 14): the config beside cpu-256, its
shapes, no motion field, no driver pixel in the output (through the backends and through a training step), the
FLOPs budget, the exported graphs (TensorRT's operators, no float64, no GridSample) run by ONNX Runtime as torch
runs the weights, and a short run of train → export-weights → evaluate → animate. Random weights throughout."""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch

from tests.conftest import REPO, assert_engines_agree, assert_no_driving_pixel_path
from tests.test_training import prepared, videos  # noqa: F401 (session fixtures: prepare-data output at 64 px)

LW = "loss_weights={perceptual: [0, 0, 0, 0, 0], equivariance_value: 0, warp_loss: 0, bg: 0, pixel: 10, landmark: 0}"


@pytest.fixture(scope="module")
def loaded():
    from splinecam.engines.tpsmm.random_weights import perturbed_random_model

    return perturbed_random_model("kpmask-256")


def _inputs(seed=0, n=1, size=256, k=50):
    g = torch.Generator().manual_seed(seed)
    src = torch.rand(n, 3, size, size, generator=g)
    kp_s = torch.rand(n, k, 2, generator=g) * 1.2 - 0.6
    kp_d = (kp_s + 0.05 * torch.randn(n, k, 2, generator=g)).clamp(-1, 1)
    return src, kp_s, kp_d


def test_config_is_cpu_256_but_the_motion():
    from splinecam.engines.tpsmm.config import load_config

    kp, cpu = load_config("kpmask-256"), load_config("cpu-256")
    assert kp.generator.kind == "keypoint-mask" and kp.dense_motion.kind == "none"
    assert kp.keypoint == cpu.keypoint and kp.landmark_keypoints and kp.num_kp == 50
    assert kp.dataset_params == cpu.dataset_params and kp.image_size == cpu.image_size == 256
    # the same loss but for cpu-256's fold term, which penalises its motion field folding: kpmask has none
    cpu_weights = {k: v for k, v in cpu.train_params["loss_weights"].items() if k != "fold"}
    assert cpu.train_params["loss_weights"]["fold"] > 0 and "fold" not in kp.train_params["loss_weights"]
    assert kp.train_params["loss_weights"] == cpu_weights
    assert kp.num_source_features == 4


def test_kinds_go_together():
    import yaml

    from splinecam.engines.errors import ConfigError
    from splinecam.engines.tpsmm.config import CONFIG_DIR, config_from_dict

    data = yaml.safe_load((CONFIG_DIR / "kpmask-256.yaml").read_text())
    data["model_params"]["dense_motion_params"] = {"kind": "light", "scale_factor": 0.25}
    with pytest.raises(ConfigError, match="keypoint-mask goes with dense_motion_params.kind: none"):
        config_from_dict(data, "x")
    data = yaml.safe_load((CONFIG_DIR / "cpu-256.yaml").read_text())
    data["model_params"]["dense_motion_params"]["kind"] = "none"
    with pytest.raises(ConfigError, match="keypoint-mask goes with"):
        config_from_dict(data, "y")


def test_forward_shapes_and_the_cached_path_is_the_uncached_one(loaded):
    from splinecam.engines.tpsmm.frame_generator import FrameGenerator, encode_source
    from splinecam.engines.tpsmm.geometry import solve_tps
    from splinecam.engines.tpsmm.kpmask import KeypointMaskMaps

    model = loaded.model
    src, kp_s, kp_d = _inputs(n=2)
    with torch.no_grad():
        maps = model.inpainting_network.encode(src)
        assert [tuple(m.shape) for m in maps] == [(2, 16, 128, 128), (2, 32, 64, 64), (2, 64, 32, 32), (2, 128, 16, 16)]
        motion = model.dense_motion_network(src, kp_d, kp_s)
        assert isinstance(motion, KeypointMaskMaps) and motion.deformation is None and motion.occlusion_maps == []
        assert motion.source.shape == motion.driving.shape == (2, 10, 64, 64) and motion.masks.shape == (2, 20, 64, 64)
        pred = model.animate(src, kp_s, kp_d)
        assert pred.shape == (2, 3, 256, 256) and 0 <= float(pred.min()) and float(pred.max()) <= 1
        # the per-frame generator on the cached source tensors (what every backend runs) = the uncached model
        st = encode_source(model, src[:1], kp_s[:1])
        tps = solve_tps(kp_d[:1], kp_s[:1], 10)
        out = FrameGenerator(model, with_bg=True)(*st.as_inputs(), kp_d[:1], tps.theta, tps.control_params,
                                                  torch.eye(3)[None])
    assert (out - pred[:1]).abs().max() < 1e-5


def test_masks_follow_the_keypoints(loaded):
    """Same keypoints → same masks (a still face); a group's mask peaks where its keypoints are."""
    from splinecam.engines.tpsmm.geometry import kp2gaussian
    from splinecam.engines.tpsmm.kpmask import group_masks

    dm = loaded.model.dense_motion_network
    src, kp_s, _ = _inputs()
    motion = dm(src, kp_s, kp_s)
    assert (motion.source - motion.driving).abs().max() < 1e-5
    ref = kp2gaussian(kp_s, 64, 64, dm.kp_variance).view(1, 10, 5, 64, 64).sum(2)
    assert (group_masks(kp_s, 10, 64, 64, dm.kp_variance) - ref).abs().max() < 1e-5
    one = torch.tensor([[[0.5, -0.25]] * 5])   # a group of 5 keypoints at one point: its mask peaks there
    peak = group_masks(one, 1, 65, 65, 0.01)[0, 0].argmax()
    assert (int(peak % 65), int(peak // 65)) == (48, 24)   # x = 0.5 → column 48, y = −0.25 → row 24


def test_no_motion_field_anywhere(loaded):
    """No TPS grids, no grid_sample in the per-frame generator: nothing is warped."""
    from splinecam.engines.tpsmm.frame_generator import FrameGenerator, encode_source
    from splinecam.engines.tpsmm.geometry import solve_tps

    model = loaded.model
    src, kp_s, kp_d = _inputs()
    st = encode_source(model, src, kp_s)
    tps = solve_tps(kp_d, kp_s, 10)
    frame = (kp_d, tps.theta, tps.control_params, torch.eye(3)[None])
    called = []
    real = torch.nn.functional.grid_sample

    def spy(*a, **k):
        called.append(1)
        return real(*a, **k)

    torch.nn.functional.grid_sample = spy
    try:
        with torch.no_grad():
            FrameGenerator(model, with_bg=True)(*st.as_inputs(), *frame)
        assert not called
        # the spy does see a warp where there is one (cpu-256's generator)
        from splinecam.engines.tpsmm.random_weights import perturbed_random_model

        cpu = perturbed_random_model("cpu-256").model
        st_c = encode_source(cpu, src, kp_s)
        with torch.no_grad():
            FrameGenerator(cpu, with_bg=True)(*st_c.as_inputs(), *frame)
        assert called
    finally:
        torch.nn.functional.grid_sample = real
    assert model.dense_motion_network.transformations(tps, 64, 64, None) is None
    assert not list(model.dense_motion_network.parameters())


def test_flops_budget():
    """A CPU model: 0.5-2 GFLOPs per frame at 256² with the source cached (engines/tpsmm/flops.py)."""
    from splinecam.engines.tpsmm.flops import count_network_flops

    f = count_network_flops("kpmask-256")
    assert f.kp_detector == 0 and f.dense_motion < 0.01        # face-mesh keypoints; masks, no network
    assert 0.5 <= f.cached_frame <= 2.0, f.to_dict()
    assert f.inpainting_encoder > 0.05                         # the cached part is really cached


def _webcam_crop():
    from splinecam.engines.faces.detection import face_crop
    from splinecam.engines.media import VideoReader

    frame = next(iter(VideoReader(REPO / "live" / "assets" / "webcam.mp4")))
    return face_crop(frame, "the frame")


def _avatar_crop():
    from splinecam.engines.model_options import avatar_sample

    crop = avatar_sample(REPO / "live" / "assets" / "mona.jpg", 256)
    assert crop is not None
    return crop


@pytest.mark.parametrize("engine", ["torch", "onnxruntime"])
def test_no_pixel_of_the_driving_frame_reaches_the_output(loaded, engine, monkeypatch, tmp_path):
    """Two driving frames with different pixels but the same keypoints give the same output (as for cpu-256 in
    tests/test_bundled.py), and moving the keypoints changes it."""
    from splinecam.engines.backends import create_backend
    from splinecam.engines.backends.options import BackendOptions

    monkeypatch.setenv("SPLINECAM_CACHE", str(tmp_path / "cache"))
    backend = create_backend(loaded, engine, "cpu", "fp32", BackendOptions(threads=1))
    try:
        assert_no_driving_pixel_path(backend, _avatar_crop(), _webcam_crop(), monkeypatch)
    finally:
        backend.close()


def test_no_driving_pixel_reaches_the_training_prediction(loaded):
    """In a training step the driving frame is the loss's target only: with its pixels replaced and its
    landmarks kept, the prediction is the same; moving its landmarks changes it."""
    from splinecam.engines.tpsmm.config import load_config
    from splinecam.training.options import TrainOptions, TrainSchedule
    from splinecam.training.step import FullModel

    cfg = load_config("kpmask-256")
    schedule = TrainSchedule.from_config(cfg, TrainOptions(data="", out=""))
    full = FullModel(loaded.model, schedule, torch.nn.Identity(), False, None).eval()
    g = torch.Generator().manual_seed(3)
    lms = torch.rand(2, 468, 2, generator=g) * 1.2 - 0.6
    batch = {"source": torch.rand(2, 3, 64, 64, generator=g), "driving": torch.rand(2, 3, 64, 64, generator=g),
             "source_landmarks": lms, "driving_landmarks": lms + 0.03 * torch.randn(2, 468, 2, generator=g)}
    with torch.no_grad():
        losses, gen = full(batch, 0, None)
        other = dict(batch, driving=torch.rand(2, 3, 64, 64, generator=g))
        losses2, gen2 = full(other, 0, None)
        moved = dict(batch, driving_landmarks=batch["driving_landmarks"] + 0.05)
        _, gen3 = full(moved, 0, None)
    assert torch.equal(gen["prediction"], gen2["prediction"])
    assert losses["pixel"] != losses2["pixel"]                     # the driving frame is the target
    assert not torch.equal(gen["prediction"], gen3["prediction"])


def test_export_passes_tensorrt_checks_and_ort_runs_it_as_torch(loaded, shared, tmp_path):
    import onnx

    from splinecam.engines.backends import create_backend
    from splinecam.engines.backends.options import BackendOptions
    from splinecam.engines.export.graph_checks import inspect_graph
    from splinecam.engines.export.onnx_export import export_onnx

    manifest = export_onnx(loaded, tmp_path, "fp32")
    assert set(manifest.graphs) == {"source_encoder", "generator"}      # landmark keypoints: no keypoint graph
    gen_inputs = [t.name for t in manifest.graphs["generator"].inputs]
    assert "kp_driving" in gen_inputs and not {"tps_theta", "tps_params", "bg_param"} & set(gen_inputs)
    allowed = {ln.strip() for ln in (shared / "reference" / "tensorrt10-onnx-ops.txt").read_text().splitlines()
               if ln.strip() and not ln.startswith("#")}
    for name, info in manifest.graphs.items():
        report = inspect_graph(tmp_path / info.file, frozenset(allowed))
        assert report.ok and not report.dynamic, (name, report.problems)
        assert "GridSample" not in report.ops
        model = onnx.shape_inference.infer_shapes(onnx.load(str(tmp_path / info.file)))
        types = {v.name: v.type.tensor_type.elem_type for v in [*model.graph.value_info, *model.graph.input,
                                                                 *model.graph.output]}
        types.update({t.name: t.data_type for t in model.graph.initializer})
        assert onnx.TensorProto.DOUBLE not in types.values(), f"{name}: a float64 tensor (TensorRT has none)"
    torch_b = create_backend(loaded, "torch", "cpu", "fp32")
    ort_b = create_backend(loaded, "onnxruntime", "cpu", "fp32", BackendOptions(onnx_dir=tmp_path, threads=1))
    try:
        assert_engines_agree(torch_b, ort_b, _avatar_crop(), atol=1e-4)
    finally:
        torch_b.close()
        ort_b.close()


def test_train_export_evaluate_animate(prepared, tmp_path, monkeypatch):  # noqa: F811
    """``splinecam train --config kpmask-256`` (a few steps at 64 px), export-weights, evaluate (with the
    still-face PSNR), animate: every command runs the keypoint-mask model."""
    from splinecam.cli import main

    monkeypatch.setenv("SPLINECAM_CACHE", str(tmp_path / "cache"))
    from splinecam.engines.tpsmm.checkpoint import load_checkpoint

    run = tmp_path / "run"
    common = ["--config", "kpmask-256", "--data", str(prepared), "--image-size", "64", "--batch-size", "2",
              "--threads", "1", "--log-every", "1", "--vis-every", "2", "--train-param", LW]
    assert main(["train", *common, "--out", str(run), "--max-steps", "3"]) == 0
    ckpt = torch.load(run / "checkpoint.pth", weights_only=True)
    assert ckpt["step"] == 3 and ckpt["config_name"] == "kpmask-256"
    assert list((run / "vis").glob("step-*.png"))
    rows = (run / "losses.csv").read_text().splitlines()[1:]
    assert len(rows) == 3 and all(np.isfinite(float(r.split(",")[3])) for r in rows)
    # the warp loss does not exist for a model that warps nothing: one line, nothing written
    refused = tmp_path / "refused"
    assert main(["train", *common[:-2], "--out", str(refused), "--max-steps", "1",
                 "--train-param", LW.replace("warp_loss: 0", "warp_loss: 10")]) == 2
    assert not (refused / "checkpoint.pth").exists()
    weights = tmp_path / "kpmask.safetensors"
    assert main(["export-weights", "--run", str(run), "--out", str(weights)]) == 0
    loaded = load_checkpoint(weights)
    assert loaded.config.generator.kind == "keypoint-mask" and loaded.model.kp_detector is None
    js = tmp_path / "eval.json"
    assert main(["evaluate", "--checkpoint", str(run / "checkpoint.pth"), "--data", str(prepared), "--max-frames", "4",
                 "--threads", "1", "--json", str(js)]) == 0
    mean = json.loads(js.read_text())["mean"]
    assert mean["l1"] > 0 and np.isfinite(mean["psnr"]) and np.isfinite(mean["psnr_still"])
    out = tmp_path / "anim.mp4"
    assert main(["animate", "--checkpoint", str(weights), "--source", str(REPO / "live" / "assets" / "mona.jpg"),
                 "--driving", str(REPO / "live" / "assets" / "webcam.mp4"), "--out", str(out), "--max-frames", "3",
                 "--backend", "torch", "--precision", "fp32", "--output-size", "128"]) == 0
    from splinecam.engines.media import VideoReader

    frames = VideoReader(out).read_all(10)
    assert len(frames) == 3 and frames[0].shape[:2] == (128, 128)
