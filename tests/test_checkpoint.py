"""Checkpoint I/O: official layouts load strictly; wrong, unsafe or foreign files are refused clearly."""

from __future__ import annotations

import json
import os
import pickle

import pytest
import torch

from splinecam.engines.errors import CheckpointError, ConfigError
from splinecam.engines.tpsmm.checkpoint import load_checkpoint, save_safetensors
from splinecam.engines.tpsmm.config import builtin_config_names, load_config
from tests.conftest import GOLDEN, REFERENCE

OFFICIAL = ("vox-256", "taichi-256", "ted-384", "mgif-256")


def official_state(config_name: str, dtype=torch.float16, seed=0) -> dict:
    """A checkpoint in the official layout with random tensors, built from state-dicts.json."""
    spec = json.loads((REFERENCE / "official-configs" / "state-dicts.json").read_text())[config_name]
    g = torch.Generator().manual_seed(seed)
    ckpt = {}
    for module, entries in spec.items():
        sd = {}
        items = entries["state_dict"] if isinstance(entries, dict) else entries
        for key, shape, *rest in items:
            if key.endswith("num_batches_tracked"):
                sd[key] = torch.tensor(7)
            else:
                sd[key] = (torch.rand(shape, generator=g) * 0.02 + 0.5).to(dtype)
        ckpt[module] = sd
    ckpt["optimizer"] = {"state": {}, "param_groups": [{"lr": 2e-4, "params": [0, 1]}]}
    ckpt["epoch"] = 99
    return ckpt


@pytest.mark.parametrize("name", OFFICIAL)
def test_official_configs_load_as_they_are(name):
    cfg = load_config(REFERENCE / "official-configs" / f"{name}.yaml")
    assert cfg.num_tps == 10 and cfg.num_kp == 50
    assert cfg.bg == (name != "mgif-256")
    assert cfg.image_size == (384 if name == "ted-384" else 256)
    assert load_config(name) == cfg


def test_unknown_config_is_a_clear_error():
    with pytest.raises(ConfigError, match="neither a built-in name"):
        load_config("vox-999")
    assert "vox-256" in builtin_config_names()


@pytest.mark.parametrize("name", OFFICIAL)
def test_official_layout_loads_strictly(tmp_path, name):
    path = tmp_path / f"{name}.pth.tar"
    torch.save(official_state(name), path)
    loaded = load_checkpoint(path, name)
    assert loaded.has_avd
    assert loaded.has_bg == (name != "mgif-256")
    p = next(loaded.model.kp_detector.parameters())
    assert p.dtype == torch.float32
    # the config can be omitted: it is matched by shape among the built-in configs
    if name in ("vox-256", "mgif-256"):
        with pytest.warns(UserWarning, match=f"match the built-in {name}"):
            assert load_checkpoint(path).config.name == name


@pytest.fixture(scope="module")
def golden_ckpt():
    return torch.load(GOLDEN / "checkpoint.pth.tar", map_location="cpu", weights_only=True)


def _save(tmp_path, ckpt, name="bad.pth.tar"):
    path = tmp_path / name
    torch.save(ckpt, path)
    return path


def test_missing_key_names_module_and_key(tmp_path, golden_ckpt):
    ckpt = dict(golden_ckpt)
    ckpt["dense_motion_network"] = {k: v for k, v in ckpt["dense_motion_network"].items() if k != "maps.bias"}
    with pytest.raises(CheckpointError, match=r"dense_motion_network is missing 'maps.bias' \(expected shape \(11,\)\)"):
        load_checkpoint(_save(tmp_path, ckpt), GOLDEN / "config.yaml")


def test_renamed_key_is_refused(tmp_path, golden_ckpt):
    ckpt = dict(golden_ckpt)
    sd = dict(ckpt["inpainting_network"])
    sd["final.weight_renamed"] = sd.pop("final.weight")
    ckpt["inpainting_network"] = sd
    with pytest.raises(CheckpointError, match="inpainting_network is missing 'final.weight'"):
        load_checkpoint(_save(tmp_path, ckpt), GOLDEN / "config.yaml")


def test_misshaped_key_names_both_shapes(tmp_path, golden_ckpt):
    ckpt = dict(golden_ckpt)
    sd = dict(ckpt["kp_detector"])
    sd["fg_encoder.fc.bias"] = torch.zeros(99)
    ckpt["kp_detector"] = sd
    with pytest.raises(CheckpointError, match=r"kp_detector.fg_encoder.fc.bias has shape \(99,\), the config expects \(100,\)"):
        load_checkpoint(_save(tmp_path, ckpt), GOLDEN / "config.yaml")


def test_wrong_config_for_checkpoint(golden_ckpt):
    with pytest.raises(CheckpointError, match="shape"):
        load_checkpoint(GOLDEN / "checkpoint.pth.tar", "vox-256")


class _Evil:
    def __reduce__(self):
        return (os.system, (f"touch {os.environ.get('SPLINECAM_EVIL_MARK', '/tmp/splinecam-evil')}",))


def test_pickle_that_runs_code_is_refused_not_run(tmp_path, monkeypatch):
    mark = tmp_path / "pwned"
    monkeypatch.setenv("SPLINECAM_EVIL_MARK", str(mark))
    path = tmp_path / "evil.pth.tar"
    with open(path, "wb") as f:
        pickle.dump({"kp_detector": _Evil()}, f)
    with pytest.raises(CheckpointError, match="refusing to load"):
        load_checkpoint(path, GOLDEN / "config.yaml")
    assert not mark.exists()


@pytest.mark.parametrize("content", [b"\x89PNG\r\n\x1a\nnot really", b"hello world\n", b""])
def test_not_a_checkpoint(tmp_path, content):
    path = tmp_path / "x.pth.tar"
    path.write_bytes(content)
    with pytest.raises(CheckpointError, match="checkpoint"):
        load_checkpoint(path, GOLDEN / "config.yaml")


def test_a_dict_that_is_not_tpsmm(tmp_path):
    path = _save(tmp_path, {"state_dict": {"w": torch.zeros(1)}})
    with pytest.raises(CheckpointError, match="not a TPSMM checkpoint"):
        load_checkpoint(path, GOLDEN / "config.yaml")


def test_missing_file():
    with pytest.raises(CheckpointError, match="does not exist"):
        load_checkpoint("/nonexistent/vox.pth.tar")


def test_safetensors_round_trip_needs_no_config(tmp_path, golden_model):
    path = save_safetensors(golden_model.model, tmp_path / "w.safetensors", {"steps": 3, "note": "test"})
    loaded = load_checkpoint(path)
    assert loaded.config == golden_model.config
    assert loaded.model_hash == golden_model.model_hash
    assert loaded.has_avd and loaded.has_bg
    assert loaded.metadata["steps"] == 3 and loaded.metadata["note"] == "test"


def test_checkpoint_without_avd_or_bg(tmp_path, golden_ckpt):
    ckpt = {k: v for k, v in golden_ckpt.items() if k not in ("avd_network", "bg_predictor")}
    with pytest.warns(UserWarning, match="background motion is identity"):
        loaded = load_checkpoint(_save(tmp_path, ckpt), GOLDEN / "config.yaml")
    assert not loaded.has_avd and not loaded.has_bg
    x = torch.rand(1, 3, 256, 256)
    eye = loaded.model.bg_predictor(x, x)
    assert torch.allclose(eye, torch.eye(3)[None])
