"""The heatmap keypoint head (ours, lite-256): soft-argmax in the landmark grid convention."""

from __future__ import annotations

import pytest
import torch
from torch import nn

from splinecam.engines.errors import ConfigError
from splinecam.engines.tpsmm.config import config_from_dict, load_config
from splinecam.engines.tpsmm.networks import TPSMM, HeatmapHead


class FixedLogits(nn.Module):
    def __init__(self, logits: torch.Tensor):
        super().__init__()
        self.logits = logits

    def forward(self, _x):
        return self.logits


def stages(size: int, width: int = 8) -> list[torch.Tensor]:
    return [torch.rand(1, width * 2 ** i, size // 2 ** (i + 2), size // 2 ** (i + 2)) for i in range(4)]


def test_peaked_heatmap_gives_its_cell_centre_in_grid_units():
    size, k = 64, 3
    head = HeatmapHead(8, k).eval()
    h = size // 8
    logits = torch.full((1, k, h, h), -50.0)
    cells = [(0, 0), (2, 5), (7, 7)]  # (row, col)
    for i, (r, c) in enumerate(cells):
        logits[0, i, r, c] = 50.0
    head.heatmaps = FixedLogits(logits)
    kp = head(stages(size), size)[0]
    for i, (r, c) in enumerate(cells):
        # a landmark at continuous pixel p has grid coordinate (p − 0.5)/(S − 1)·2 − 1; cell c is centred at (c + ½)·8
        want = torch.tensor([((c + 0.5) * 8 - 0.5) / (size - 1) * 2 - 1, ((r + 0.5) * 8 - 0.5) / (size - 1) * 2 - 1])
        assert torch.allclose(kp[i], want, atol=1e-5), (i, kp[i], want)


def test_flat_heatmap_is_the_centre():
    head = HeatmapHead(8, 5).eval()
    head.heatmaps = FixedLogits(torch.zeros(2, 5, 8, 8))
    assert torch.allclose(head(stages(64), 64), torch.zeros(2, 5, 2), atol=1e-6)


def test_lite_256_uses_it_and_official_configs_do_not():
    assert TPSMM(load_config("lite-256")).kp_detector.heatmap_head is not None
    vox = TPSMM(load_config("vox-256")).kp_detector
    assert vox.heatmap_head is None and vox.fg_encoder.fc is not None


def test_unknown_head_is_a_config_error():
    data = {"model_params": {"kp_detector_params": {"width": 8, "head": "transformer"}}}
    with pytest.raises(ConfigError, match="head must be one of fc, heatmap, landmarks"):
        config_from_dict(data, "bad")
