"""Parity with the official implementation: every output in golden-small/io.npz at float32.

Tolerances: exactly reference/README.md's, read from ``reference_tolerances`` (one place).
"""

from __future__ import annotations

import numpy as np
import pytest
import torch

from splinecam.engines.tpsmm.geometry import RandomTPS, relative_keypoints, relative_scale
from splinecam.engines.tpsmm.layers import AntiAliasInterpolation2d
from tests.reference_tolerances import RELATIVE_SCALE_REL, golden_tol


def t(x):
    return torch.from_numpy(np.ascontiguousarray(x)).float()


@pytest.fixture(scope="module")
def net(golden_model):
    return golden_model.model


@pytest.fixture(scope="module")
def images(golden_io):
    source = t(golden_io["source"]).permute(2, 0, 1)[None]
    driving = t(golden_io["driving"]).permute(0, 3, 1, 2)
    return source, driving


def close(name, got, want):
    """``got`` matches io.npz array ``name`` (``want``) within the reference tolerance for it."""
    tol = golden_tol(name)
    got = got.detach().numpy() if isinstance(got, torch.Tensor) else np.asarray(got)
    assert got.shape == want.shape, f"{name}: shape {got.shape} != {want.shape}"
    err = float(np.abs(got - want).max())
    assert err <= tol, f"{name}: max abs error {err:.3g} > {tol}"


@torch.no_grad()
def test_keypoints(net, images, golden_io):
    source, driving = images
    close("kp_source", net.kp_detector(source), golden_io["kp_source"])
    close("kp_driving", net.kp_detector(driving), golden_io["kp_driving"])


@torch.no_grad()
def test_relative_and_avd_normalisation(net, golden_io):
    kp_s, kp_d = golden_io["kp_source"], golden_io["kp_driving"]
    scale, ok = relative_scale(kp_s[0], kp_d[0])
    assert ok
    want = float(golden_io["relative_scale"])
    assert abs(scale - want) <= RELATIVE_SCALE_REL * abs(want)
    close("kp_relative", relative_keypoints(kp_s, kp_d, kp_d[:1], scale).astype(np.float32), golden_io["kp_relative"])
    close("kp_avd", net.avd_network(t(kp_s), t(kp_d)), golden_io["kp_avd"])


@torch.no_grad()
def test_background_params(net, images, golden_io):
    source, driving = images
    close("bg_param", net.bg_predictor(source.expand(len(driving), -1, -1, -1), driving), golden_io["bg_param"])


@torch.no_grad()
def test_antialias_pyramid(images, golden_io):
    source, _ = images
    for scale, key in [(0.5, "antialias_0_5"), (0.25, "antialias_0_25"), (0.125, "antialias_0_125")]:
        close(key, AntiAliasInterpolation2d(3, scale)(source), golden_io[key])


@torch.no_grad()
def test_relative_dense_motion_and_prediction(net, images, golden_io):
    source, driving = images
    n = len(driving)
    src = source.expand(n, -1, -1, -1)
    kp_src = t(golden_io["kp_source"]).expand(n, -1, -1)
    motion = net.dense_motion_network(src, t(golden_io["kp_relative"]), kp_src)
    close("rel_transformations", motion.transformations, golden_io["rel_transformations"])
    close("rel_deformation", motion.deformation, golden_io["rel_deformation"])
    close("rel_contribution_maps", motion.contribution_maps, golden_io["rel_contribution_maps"])
    close("rel_deformed_source", motion.deformed_source, golden_io["rel_deformed_source"])
    for i, occ in enumerate(motion.occlusion_maps):
        close(f"rel_occlusion_{i}", occ, golden_io[f"rel_occlusion_{i}"])
    out = net.inpainting_network(src, motion)
    close("rel_prediction", out.prediction, golden_io["rel_prediction"])
    close("rel_deformed", out.deformed, golden_io["rel_deformed"])


@torch.no_grad()
def test_standard_mode_with_background(net, images, golden_io):
    source, driving = images
    n = len(driving)
    src = source.expand(n, -1, -1, -1)
    kp_src = t(golden_io["kp_source"]).expand(n, -1, -1)
    motion = net.dense_motion_network(src, t(golden_io["kp_driving"]), kp_src, t(golden_io["bg_param"]))
    close("std_bg_deformation", motion.deformation, golden_io["std_bg_deformation"])
    close("std_bg_prediction", net.inpainting_network(src, motion).prediction, golden_io["std_bg_prediction"])


@torch.no_grad()
def test_avd_prediction(net, images, golden_io):
    source, driving = images
    n = len(driving)
    pred = net.animate(source.expand(n, -1, -1, -1), t(golden_io["kp_source"]).expand(n, -1, -1), t(golden_io["kp_avd"]))
    close("avd_prediction", pred, golden_io["avd_prediction"])


@torch.no_grad()
def test_large_synthetic_motion(net, images, golden_io):
    source, _ = images
    kp_d = t(golden_io["synth_kp_driving"])
    n = len(kp_d)
    src = source.expand(n, -1, -1, -1)
    motion = net.dense_motion_network(src, kp_d, t(golden_io["kp_source"]).expand(n, -1, -1))
    close("synth_transformations", motion.transformations, golden_io["synth_transformations"])
    close("synth_deformation", motion.deformation, golden_io["synth_deformation"])
    close("synth_prediction", net.inpainting_network(src, motion).prediction, golden_io["synth_prediction"])


def test_random_tps(golden_io):
    tps = RandomTPS(t(golden_io["rand_tps_theta"]), t(golden_io["rand_tps_control_points"]),
                    t(golden_io["rand_tps_control_params"]))
    close("rand_tps_warped_kp_source", tps.warp_coordinates(t(golden_io["kp_source"])),
          golden_io["rand_tps_warped_kp_source"])
    frame = torch.zeros(1, 3, 256, 256)
    close("rand_tps_frame_grid", tps.transform_frame(frame), golden_io["rand_tps_frame_grid"])
