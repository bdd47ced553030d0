"""The TPS systems' regulariser: official ("all") vs radial block only ("kernel", cpu-256).

The official TPSMM adds 0.01 to the whole (P+3)² diagonal, the affine block included, so even
identical keypoint sets give a TPS that is not the identity. For keypoints spread over the frame
(official checkpoints) that is small; for a group of five face-mesh landmarks a few pixels apart it
is a distortion of many pixels when nothing moves — a still face did not come back intact.
"""

import numpy as np
import pytest
import torch

from splinecam.engines.tpsmm.config import load_config
from splinecam.engines.tpsmm.geometry import make_coordinate_grid, solve_tps, tps_warp_grid
from splinecam.engines.tpsmm.host import generator_feeds, solve_tps_host


def landmark_groups(seed: int = 0) -> torch.Tensor:
    """(1, 50, 2): ten tight groups of five points (a face's landmark groups span ~0.05–0.3)."""
    g = torch.Generator().manual_seed(seed)
    centres = torch.rand(10, 1, 2, generator=g) * 1.2 - 0.6
    return (centres + 0.08 * torch.randn(10, 5, 2, generator=g)).reshape(1, 50, 2)


def identity_error(kp: torch.Tensor, regularise: str) -> float:
    grid = tps_warp_grid(solve_tps(kp, kp, 10, regularise), 64, 64)
    return float((grid - make_coordinate_grid(64, 64, dtype=torch.float32)).abs().max())


def test_kernel_regularisation_gives_the_identity_for_a_still_face():
    kp = landmark_groups()
    assert identity_error(kp, "kernel") < 1e-4          # float32 rounding: < 0.01 px at 128²
    assert identity_error(kp, "all") > 0.05          # the official system: not the identity (≥ 3 px at 128²)


def test_kernel_regularisation_reproduces_affine_motion_exactly():
    kp = landmark_groups(1)
    a = torch.tensor([[1.05, 0.04], [-0.03, 0.97]])
    moved = kp @ a.T + torch.tensor([0.02, -0.01])
    tps = solve_tps(moved, kp, 10, "kernel")       # driving = moved, source = kp: maps moved → kp
    pts = tps_warp_grid(tps, 16, 16)[0, 0].reshape(-1, 2)
    grid = make_coordinate_grid(16, 16, dtype=torch.float32).reshape(-1, 2)
    expect = (grid - torch.tensor([0.02, -0.01])) @ torch.linalg.inv(a).T
    assert float((pts - expect).abs().max()) < 1e-4


@pytest.mark.parametrize("regularise", ["all", "kernel"])
def test_host_solve_matches_torch(regularise):
    kp_s = landmark_groups(2)
    kp_d = kp_s + 0.02 * torch.randn(kp_s.shape, generator=torch.Generator().manual_seed(3))
    tps = solve_tps(kp_d.double(), kp_s.double(), 10, regularise)
    theta, params = solve_tps_host(kp_d[0].numpy(), kp_s[0].numpy(), 10, regularise)
    assert np.abs(theta - tps.theta[0].numpy()).max() < 1e-8
    assert np.abs(params - tps.control_params[0].numpy()).max() < 1e-8


def test_configs_choose_it_and_the_host_step_follows():
    cpu, vox = load_config("cpu-256"), load_config("vox-256")
    assert cpu.dense_motion.tps_regularise == "kernel" and vox.dense_motion.tps_regularise == "all"
    kp = landmark_groups()[0].numpy()
    feeds = generator_feeds(cpu, kp, kp)
    assert np.abs(feeds["tps_theta"][0] - np.array([[1, 0, 0], [0, 1, 0]], np.float32)).max() < 1e-5
    assert np.abs(feeds["tps_params"]).max() < 1e-5


def test_unknown_regularisation_is_refused():
    from splinecam.engines.errors import ConfigError
    from splinecam.engines.tpsmm.config import config_from_dict

    data = {"model_params": {"common_params": {"num_tps": 10}, "dense_motion_params": {"tps_regularise": "none"}}}
    with pytest.raises((ConfigError, ValueError), match="tps_regularise"):
        config_from_dict(data, "bad")


def test_affine_groups_are_a_least_squares_affine_of_the_fit_groups_and_leave_the_rest_alone():
    """``dense_motion_params.affine_tps`` / ``affine_fit``: the listed group becomes the least-squares affine
    map of the fit groups' keypoints (exact when the motion is affine, no radial part), the other groups are
    the splines they were, and the torch and host solvers agree."""
    from splinecam.engines.tpsmm.geometry import AffineGroups

    kp = landmark_groups(2).double()
    a = torch.tensor([[1.08, 0.15], [-0.12, 0.93]], dtype=torch.float64)
    shift = torch.tensor([0.03, -0.05], dtype=torch.float64)
    noise = 0.01 * torch.randn(kp.shape, generator=torch.Generator().manual_seed(3), dtype=torch.float64)
    driving = kp + noise
    source = driving @ a.T + shift                    # exactly affine: driving → source
    plain = solve_tps(driving, source, 10, "kernel")
    rigid = solve_tps(driving, source, 10, "kernel", AffineGroups((9,), (2, 3, 4, 5, 9)))
    expected = torch.cat([a, shift[:, None]], 1)
    assert torch.allclose(rigid.theta[0, 9], expected, atol=1e-9)
    assert float(rigid.control_params[0, 9].abs().max()) == 0.0
    assert torch.equal(rigid.theta[:, :9], plain.theta[:, :9])
    assert torch.equal(rigid.control_params[:, :9], plain.control_params[:, :9])
    # a non-affine motion: the group is the fit over the 25 points, not its own five
    bent = source + 0.05 * torch.sin(6 * driving)
    rigid = solve_tps(driving, bent, 10, "kernel", AffineGroups((9,), (2, 3, 4, 5, 9)))
    x = torch.cat([driving[0].reshape(10, 5, 2)[[2, 3, 4, 5, 9]].reshape(-1, 2), torch.ones(25, 1, dtype=torch.float64)], 1)
    y = bent[0].reshape(10, 5, 2)[[2, 3, 4, 5, 9]].reshape(-1, 2)
    lstsq = torch.linalg.lstsq(x, y).solution.T
    assert torch.allclose(rigid.theta[0, 9], lstsq, atol=1e-9)
    theta, params = solve_tps_host(driving[0].numpy(), bent[0].numpy(), 10, "kernel", (9,), (2, 3, 4, 5, 9))
    np.testing.assert_allclose(theta, rigid.theta[0].numpy(), atol=1e-9)
    np.testing.assert_allclose(params, rigid.control_params[0].numpy(), atol=1e-9)


def test_affine_groups_in_a_config_round_trip_and_are_checked():
    from splinecam.engines.tpsmm.config import ConfigError, config_from_dict

    data = load_config("cpu-256").to_yaml_dict()
    data["model_params"]["dense_motion_params"].update(affine_tps=[9], affine_fit=[2, 3, 4, 5, 9])
    cfg = config_from_dict(data, "rigid")
    assert cfg.dense_motion.affine_tps == (9,) and cfg.dense_motion.affine_fit == (2, 3, 4, 5, 9)
    assert config_from_dict(cfg.to_yaml_dict(), "again") == cfg
    feeds = generator_feeds(cfg, landmark_groups(4).numpy()[0], landmark_groups(5).numpy()[0])
    assert float(np.abs(feeds["tps_params"][0, 9]).max()) == 0.0
    assert "affine_tps" not in load_config("cpu-256").to_yaml_dict()["model_params"]["dense_motion_params"]
    data["model_params"]["dense_motion_params"]["affine_tps"] = [10]
    with pytest.raises(ConfigError, match="affine_tps"):
        config_from_dict(data, "bad")
