"""FOMM parity with the official implementation: every output in fomm-golden-small/io.npz at float32.

Tolerances: exactly reference/README.md's, read from ``reference_tolerances`` (one place). Each array
is reproduced from the golden checkpoint through our networks and host-side normalisation; the
last test checks that no output array of io.npz went unchecked.
"""

from __future__ import annotations

import numpy as np
import pytest
import torch

from splinecam.engines.fomm import keypoints as fk
from splinecam.engines.fomm.networks import FommKeypoints
from splinecam.engines.tpsmm.geometry import relative_scale
from splinecam.engines.tpsmm.layers import AntiAliasInterpolation2d
from tests.reference_tolerances import RELATIVE_SCALE_REL, fomm_tol

INPUTS = {"source", "driving", "driving_frame_indices", "synth_kp_value", "synth_kp_jacobian"}
CHECKED: set[str] = set()


def t(x):
    return torch.from_numpy(np.ascontiguousarray(x)).float()


def close(name, got, want):
    tol = fomm_tol(name)
    got = got.detach().numpy() if isinstance(got, torch.Tensor) else np.asarray(got)
    assert got.shape == want.shape, f"{name}: shape {got.shape} != {want.shape}"
    err = float(np.abs(got - want).max())
    assert err <= tol, f"{name}: max abs error {err:.3g} > {tol}"
    CHECKED.add(name)


@pytest.fixture(scope="module")
def net(fomm_golden_model):
    return fomm_golden_model.model


@pytest.fixture(scope="module")
def images(fomm_golden_io):
    source = t(fomm_golden_io["source"]).permute(2, 0, 1)[None]
    driving = t(fomm_golden_io["driving"]).permute(0, 3, 1, 2)
    return source, driving


def _kp(io, prefix, n=None):
    value, jac = t(io[f"{prefix}_value"]), t(io[f"{prefix}_jacobian"])
    if n is not None:
        value, jac = value.expand(n, -1, -1), jac.expand(n, -1, -1, -1)
    return FommKeypoints(value, jac)


def test_golden_checkpoint_is_fomm(fomm_golden_model):
    assert fomm_golden_model.config.family == "fomm"
    assert not fomm_golden_model.has_avd and not fomm_golden_model.has_bg
    assert set(fomm_golden_model.model.submodules()) == {"kp_detector", "generator"}


@torch.no_grad()
def test_keypoints_and_jacobians(net, images, fomm_golden_io):
    source, driving = images
    for name, image in (("kp_source", source), ("kp_driving", driving)):
        kp = net.kp_detector.detect(image)
        close(f"{name}_value", kp.value, fomm_golden_io[f"{name}_value"])
        close(f"{name}_jacobian", kp.jacobian, fomm_golden_io[f"{name}_jacobian"])
        packed = net.kp_detector(image)  # the interface's (N,K,6) layout holds exactly the same numbers
        assert torch.equal(packed[..., :2], kp.value) and torch.equal(packed[..., 2:].reshape(kp.jacobian.shape),
                                                                     kp.jacobian)


def test_relative_normalisation_with_adapt_scale(fomm_golden_io):
    io = fomm_golden_io
    src = fk.pack(io["kp_source_value"][0], io["kp_source_jacobian"][0])
    drv = fk.pack(io["kp_driving_value"], io["kp_driving_jacobian"])
    scale, ok = relative_scale(src[:, :2], drv[0, :, :2])
    want = float(io["relative_scale"])
    assert ok and abs(scale - want) <= RELATIVE_SCALE_REL * abs(want)
    CHECKED.add("relative_scale")
    rel = fk.relative_keypoints(src, drv, drv[0], scale)
    value, jac = fk.unpack(rel)
    close("kp_relative_value", value, io["kp_relative_value"])
    close("kp_relative_jacobian", jac, io["kp_relative_jacobian"])


@torch.no_grad()
def test_dense_motion_and_generator_relative(net, images, fomm_golden_io):
    io = fomm_golden_io
    source = images[0].expand(5, -1, -1, -1)
    out = net.generator(source, _kp(io, "kp_relative"), _kp(io, "kp_source", 5))
    close("rel_dense_sparse_deformed", out.motion.sparse_deformed, io["rel_dense_sparse_deformed"])
    close("rel_dense_mask", out.motion.mask, io["rel_dense_mask"])
    close("rel_dense_deformation", out.motion.deformation, io["rel_dense_deformation"])
    close("rel_dense_occlusion_map", out.motion.occlusion_map, io["rel_dense_occlusion_map"])
    close("rel_prediction", out.prediction, io["rel_prediction"])
    close("rel_deformed", out.deformed, io["rel_deformed"])


@torch.no_grad()
def test_standard_and_relative_without_jacobian(net, images, fomm_golden_io):
    io = fomm_golden_io
    source = images[0].expand(5, -1, -1, -1)
    kp_source = _kp(io, "kp_source", 5)
    close("std_prediction", net.generator(source, _kp(io, "kp_driving"), kp_source).prediction, io["std_prediction"])
    # Avatarify's default: relative positions, the driver's raw jacobians (use_relative_jacobian off)
    src = fk.pack(io["kp_source_value"][0], io["kp_source_jacobian"][0])
    drv = fk.pack(io["kp_driving_value"], io["kp_driving_jacobian"])
    scale, _ = relative_scale(src[:, :2], drv[0, :, :2])
    nojac = FommKeypoints.unpack(t(fk.relative_keypoints(src, drv, drv[0], scale, use_relative_jacobian=False)))
    close("relnojac_prediction", net.generator(source, nojac, kp_source).prediction, io["relnojac_prediction"])


@torch.no_grad()
def test_large_synthetic_motion(net, images, fomm_golden_io):
    io = fomm_golden_io
    out = net.generator(images[0].expand(2, -1, -1, -1), _kp(io, "synth_kp"), _kp(io, "kp_source", 2))
    close("synth_prediction", out.prediction, io["synth_prediction"])
    close("synth_deformed", out.deformed, io["synth_deformed"])
    close("synth_occlusion_map", out.motion.occlusion_map, io["synth_occlusion_map"])


@torch.no_grad()
def test_antialias_is_tpsmms(net, images, fomm_golden_io):
    close("antialias_0_25", AntiAliasInterpolation2d(3, 0.25)(images[0]), fomm_golden_io["antialias_0_25"])
    # the checkpoint's own kernels (float16 in the file) give the same downsampling
    close("antialias_0_25", net.generator.dense_motion_network.downsample(images[0]), fomm_golden_io["antialias_0_25"])


def test_every_output_array_was_checked(fomm_golden_io, request):
    here = [i for i in request.session.items if i.module is request.module]
    defined = [n for n in dir(request.module) if n.startswith("test_")]
    if len(here) < len(defined):
        pytest.skip("only part of this module was selected: the coverage check needs all of it")
    missing = set(fomm_golden_io) - INPUTS - CHECKED
    assert not missing, f"io.npz outputs not reproduced by this module: {sorted(missing)}"
