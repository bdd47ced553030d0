"""``train --init`` from a narrower cpu-256 dense motion: the widened network computes the same function
(training/widen.py), in eval and in train mode, and then trains (its new weights get gradients)."""

from __future__ import annotations

import dataclasses

import pytest
import torch

from splinecam.engines.tpsmm.config import load_config
from splinecam.engines.tpsmm.networks import TPSMM
from splinecam.training.widen import can_widen, widen_dense_motion


def wider(cfg, width=24, cap=96):
    return dataclasses.replace(cfg, dense_motion=dataclasses.replace(cfg.dense_motion, block_expansion=width,
                                                                     max_features=cap))


def motion_inputs(cfg, n=2, seed=0):
    g = torch.Generator().manual_seed(seed)
    k = cfg.num_tps * 5
    kp_s = torch.rand(n, k, 2, generator=g) * 1.2 - 0.6
    return (torch.rand(n, 3, cfg.image_size, cfg.image_size, generator=g),
            kp_s + 0.05 * torch.randn(n, k, 2, generator=g), kp_s)


@pytest.fixture(scope="module")
def trained_narrow():
    cfg = load_config("cpu-256")
    torch.manual_seed(1)
    narrow = TPSMM(cfg).dense_motion_network
    with torch.no_grad():  # trained-looking weights and BatchNorm statistics, not the fresh ones
        for p in narrow.parameters():
            p.add_(0.05 * torch.randn_like(p))
        for m in narrow.modules():
            if isinstance(m, torch.nn.BatchNorm2d):
                m.running_mean.uniform_(-0.2, 0.2)
                m.running_var.uniform_(0.5, 1.5)
    return cfg, narrow


@pytest.mark.parametrize("train_mode", [False, True])
def test_the_widened_network_computes_the_same_motion(trained_narrow, train_mode):
    cfg, narrow = trained_narrow
    wide = TPSMM(wider(cfg)).dense_motion_network
    assert can_widen(narrow, wide) and not can_widen(wide, narrow) and not can_widen(narrow, narrow)
    widen_dense_motion(narrow, wide)
    narrow.train(train_mode)
    wide.train(train_mode)
    src, kp_d, kp_s = motion_inputs(cfg)
    with torch.no_grad():
        a, b = narrow(src, kp_d, kp_s), wide(src, kp_d, kp_s)
    torch.testing.assert_close(b.deformation, a.deformation, rtol=0, atol=1e-5)
    torch.testing.assert_close(b.occlusion_maps[0], a.occlusion_maps[0], rtol=0, atol=1e-5)
    torch.testing.assert_close(b.contribution_maps, a.contribution_maps, rtol=0, atol=1e-5)
    narrow.eval()


def test_the_new_channels_learn(trained_narrow):
    cfg, narrow = trained_narrow
    wide = TPSMM(wider(cfg)).dense_motion_network
    widen_dense_motion(narrow, wide)
    src, kp_d, kp_s = motion_inputs(cfg)
    wide.train()
    wide(src, kp_d, kp_s).deformation.square().mean().backward()
    c_old = narrow.unet.first[0].out_channels
    # the zeros that keep the function (old outputs reading new channels) get gradient, so they move
    assert wide.maps.weight.grad[:, c_old:].abs().sum() > 0


def test_init_widens_a_narrower_checkpoint(tmp_path, trained_narrow):
    from splinecam.engines.checkpoint_io import save_safetensors
    from splinecam.training.init_weights import init_weights_from

    cfg, narrow = trained_narrow
    old = TPSMM(cfg)
    old.dense_motion_network.load_state_dict(narrow.state_dict())
    path = save_safetensors(old, tmp_path / "narrow.safetensors")
    new = TPSMM(wider(cfg))
    got = init_weights_from(new, str(path))
    assert "dense_motion_network" in got.fresh
    new.eval()
    old.eval()
    src, kp_d, kp_s = motion_inputs(cfg, seed=3)
    with torch.no_grad():
        torch.testing.assert_close(new.dense_motion_network(src, kp_d, kp_s).deformation,
                                   old.dense_motion_network(src, kp_d, kp_s).deformation, rtol=0, atol=1e-5)
    for name in ("inpainting_network",):  # the rest is copied as before
        for k, v in getattr(old, name).state_dict().items():
            torch.testing.assert_close(getattr(new, name).state_dict()[k], v)
