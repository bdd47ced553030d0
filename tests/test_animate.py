"""Offline animation: the official demo's frames for --crop none, face crops, clear errors."""

from __future__ import annotations

import subprocess
import sys

import numpy as np
import pytest
import torch

from splinecam.engines.backends import create_backend
from splinecam.engines.media import VideoReader, count_frames, read_image, write_image
from splinecam.live.animate import official_resize
from splinecam.live.normalise import KeypointNormaliser
from tests.conftest import DATA, GOLDEN
from tests.reference_tolerances import golden_tol

GOLDEN_ARGS = ["--checkpoint", str(GOLDEN / "checkpoint.pth.tar"), "--config", str(GOLDEN / "config.yaml")]


def run_cli(*args, cwd=None):
    return subprocess.run([sys.executable, "-m", "splinecam", *args], capture_output=True, text=True, cwd=cwd,
                          timeout=600)


def test_official_preprocessing_is_reproduced(golden_io):
    src = official_resize(read_image(DATA / "samples" / "source.png"), 256)
    assert np.abs(src - golden_io["source"]).max() == 0.0
    frames = VideoReader(DATA / "samples" / "driving.mp4").read_all(max_frames=int(golden_io["driving_frame_indices"].max()) + 1)
    for j, i in enumerate(golden_io["driving_frame_indices"]):
        assert np.abs(official_resize(frames[i], 256) - golden_io["driving"][j]).max() == 0.0


def test_crop_none_frames_equal_official_demo(golden_model, golden_io):
    """Backend + relative normaliser on the official inputs give the official predictions (uint8)."""
    backend = create_backend(golden_model, "torch", "cpu", "fp32")
    state = backend.prepare_source(golden_io["source"])
    assert np.abs(state.kp - golden_io["kp_source"][0]).max() <= golden_tol("kp_source")
    norm = KeypointNormaliser(state.kp, "relative")
    for j, frame in enumerate(golden_io["driving"]):
        out = backend.generate(state, norm(backend.keypoints(frame)))
        want = np.rint(golden_io["rel_prediction"][j].transpose(1, 2, 0) * 255)
        assert np.abs(out.astype(np.float64) - want).max() <= 1.0


def test_cached_source_matches_uncached(golden_model, golden_io):
    backend = create_backend(golden_model, "torch", "cpu", "fp32")
    state = backend.prepare_source(golden_io["source"])
    src = torch.from_numpy(golden_io["source"]).permute(2, 0, 1)[None]
    for kp in golden_io["synth_kp_driving"]:
        from splinecam.engines.tpsmm.geometry import solve_tps

        kd = torch.from_numpy(kp)[None]
        tps = solve_tps(kd, state.tensors.kp, 10)
        with torch.no_grad():
            cached = backend.graphs.generator(*state.tensors.as_inputs(), kd, tps.theta, tps.control_params,
                                              torch.eye(3)[None])
            uncached = golden_model.model.animate(src, state.tensors.kp, kd)
        assert (cached - uncached).abs().max().item() <= 1e-5


def test_animate_crop_none_cli(tmp_path):
    out = tmp_path / "out.mp4"
    res = run_cli("animate", *GOLDEN_ARGS, "--source", str(DATA / "samples" / "source.png"),
                  "--driving", str(DATA / "samples" / "driving.mp4"), "--crop", "none", "--max-frames", "12",
                  "--out", str(out), "--backend", "torch", "--precision", "fp32", cwd=tmp_path)
    assert res.returncode == 0, res.stderr
    reader = VideoReader(out)
    assert reader.size == (256, 256) and reader.fps == 25
    assert count_frames(out) == 12
    assert reader.has_audio


def test_animate_crop_face_with_best_frame(tmp_path):
    out = tmp_path / "face.mp4"
    res = run_cli("animate", *GOLDEN_ARGS, "--source", str(DATA / "avatars" / "mona.jpg"),
                  "--driving", str(DATA / "clips" / "webcam" / "lp-d12.mp4"), "--max-frames", "6",
                  "--find-best-frame", "--output-size", "384", "--out", str(out), "--backend", "torch",
                  "--precision", "fp32", cwd=tmp_path)
    assert res.returncode == 0, res.stderr
    assert VideoReader(out).size == (384, 384)
    assert count_frames(out) == 6


@pytest.mark.parametrize("kind", ["blank", "landscape"])
def test_no_face_is_one_clear_line(tmp_path, kind):
    h, w = 360, 480
    if kind == "blank":
        img = np.full((h, w, 3), 200, np.uint8)
    else:
        y = np.linspace(0, 1, h)[:, None]
        img = np.zeros((h, w, 3), np.uint8)
        img[..., 2] = (255 * (1 - 0.5 * y)).astype(np.uint8)
        img[..., 1] = (180 * (1 - 0.3 * y)).astype(np.uint8)
        img[h * 2 // 3:] = (40, 140, 50)
    path = tmp_path / f"{kind}.png"
    write_image(path, img)
    res = run_cli("animate", *GOLDEN_ARGS, "--source", str(path), "--driving", str(DATA / "samples" / "driving.mp4"),
                  "--out", str(tmp_path / "x.mp4"), cwd=tmp_path)
    assert res.returncode != 0
    lines = res.stderr.strip().splitlines()
    assert len(lines) == 1 and "no face found" in lines[0] and str(path) in lines[0]
    assert not (tmp_path / "x.mp4").exists()


def test_avd_mode_without_avd_network_is_refused(tmp_path):
    ckpt = torch.load(GOLDEN / "checkpoint.pth.tar", map_location="cpu", weights_only=True)
    del ckpt["avd_network"]
    path = tmp_path / "noavd.pth.tar"
    torch.save(ckpt, path)
    res = run_cli("animate", "--checkpoint", str(path), "--config", str(GOLDEN / "config.yaml"), "--mode", "avd",
                  "--source", str(DATA / "samples" / "source.png"), "--driving", str(DATA / "samples" / "driving.mp4"),
                  "--crop", "none", "--out", str(tmp_path / "x.mp4"), cwd=tmp_path)
    assert res.returncode != 0
    assert "AVD network" in res.stderr.strip().splitlines()[-1]


def test_relative_mode_survives_degenerate_keypoints():
    kp_src = np.random.default_rng(0).uniform(-0.5, 0.5, (50, 2)).astype(np.float32)
    norm = KeypointNormaliser(kp_src, "relative")
    flat = np.zeros((50, 2), np.float32)
    flat[:, 0] = np.linspace(-1, 1, 50)  # collinear: zero hull area
    with pytest.warns(UserWarning, match="degenerate"):
        cal = norm.calibrate(flat)
    assert cal.scale == 1.0 and not cal.scale_ok
    out = norm(flat + 0.1)
    assert np.isfinite(out).all() and np.allclose(out, kp_src + 0.1, atol=1e-6)
