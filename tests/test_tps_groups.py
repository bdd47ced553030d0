"""training/tps_groups.py: a TPS group's whole-mesh error separates near-collinear groups from spread ones."""

from __future__ import annotations

import json

import numpy as np
import pytest

pytest.importorskip("torch")

from splinecam.training import tps_groups  # noqa: E402

SIZE = 256


def _prepared(tmp_path, frames: np.ndarray):
    """A one-clip prepare-data folder holding (T,468,2) pixel landmarks."""
    np.save(tmp_path / "c.landmarks.npy", frames.astype(np.float32))
    (tmp_path / "manifest.json").write_text(json.dumps(
        {"size": SIZE, "clips": [{"name": "c", "path": "c.npy", "landmarks_path": "c.landmarks.npy"}]}))
    return tmp_path


def _face(rng) -> np.ndarray:
    """468 points spread over a face-sized disc, with a near-collinear arc at indices 0–4 (a 'forehead')
    and a spread pentagon at 5–9."""
    pts = rng.uniform(70, 190, (468, 2))
    pts[0:5] = np.stack([np.linspace(90, 170, 5), 80 + np.array([0.4, -0.3, 0.0, 0.3, -0.4])], 1)
    ang = np.linspace(0, 2 * np.pi, 6)[:5]
    pts[5:10] = 128 + 30 * np.stack([np.cos(ang), np.sin(ang)], 1)
    return pts


def _moved(pts: np.ndarray, rng, angle: float, scale: float, noise: float) -> np.ndarray:
    c, s = np.cos(angle) * scale, np.sin(angle) * scale
    out = (pts - 128) @ np.array([[c, -s], [s, c]]).T + 128 + np.array([3.0, -2.0])
    return out + rng.normal(0, noise, out.shape)


def test_a_rigid_motion_is_carried_exactly_by_a_spread_group(tmp_path):
    rng = np.random.default_rng(0)
    face = _face(rng)
    frames = np.stack([face] + [_moved(face, rng, a, 1.05, 0.0) for a in (0.05, 0.1, 0.15)])
    source, driving, size = tps_groups.load_pairs(_prepared(tmp_path, frames), stride=1)
    assert source.shape == driving.shape == (3, 468, 2) and size == SIZE
    fit = tps_groups.fit_group((5, 6, 7, 8, 9), source, driving, size)
    assert fit.median_px < 0.05 and fit.spread > 0.9
    assert tps_groups.no_motion_px(source, driving, size) > 5


def test_landmark_noise_throws_a_near_collinear_group_far_off(tmp_path):
    rng = np.random.default_rng(1)
    face = _face(rng)
    frames = np.stack([face] + [_moved(face, rng, a, 1.0, 0.5) for a in np.linspace(-0.1, 0.1, 12)])
    source, driving, size = tps_groups.load_pairs(_prepared(tmp_path, frames), stride=1)
    arc = tps_groups.fit_group((0, 1, 2, 3, 4), source, driving, size)
    round_ = tps_groups.fit_group((5, 6, 7, 8, 9), source, driving, size)
    assert arc.spread < 0.02 < 0.9 < round_.spread
    assert round_.median_px < 2.0
    assert arc.median_px > 5 * round_.median_px


def test_cli_prints_each_group_and_names_a_folder_without_a_manifest(tmp_path, capsys):
    rng = np.random.default_rng(2)
    face = _face(rng)
    frames = np.stack([face, _moved(face, rng, 0.1, 1.0, 0.2)])
    (tmp_path / "d").mkdir()
    data = _prepared(tmp_path / "d", frames)
    assert tps_groups.main(["--data", str(data), "--groups", "[[0,1,2,3,4],[5,6,7,8,9]]", "--stride", "1"]) == 0
    out = capsys.readouterr().out
    assert "1 driving frames" in out and out.count(" px | p95 ") == 2
    assert tps_groups.main(["--data", str(tmp_path / "missing")]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "no manifest.json" in err[0] and "prepare-data" in err[0]
