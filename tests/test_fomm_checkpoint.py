"""FOMM configs and checkpoints: official layouts load strictly (zip and legacy serialisation), are
recognised without --config, and wrong / foreign / incomplete files are refused in one line."""

from __future__ import annotations

import dataclasses
import json

import pytest
import torch
import yaml

from splinecam.engines.errors import CheckpointError, ConfigError
from splinecam.engines.tpsmm.checkpoint import load_checkpoint, save_safetensors
from splinecam.engines.tpsmm.config import load_config
from tests.conftest import FOMM_GOLDEN, GOLDEN, REFERENCE

SPEC = REFERENCE / "fomm-state-dicts.json"
CONFIGS = ("vox-256", "vox-adv-256")


def _spec() -> dict:
    return json.loads(SPEC.read_text())


def official_fomm_state(name: str, dtype=torch.float16, seed=0, discriminator_in: int | None = None) -> dict:
    """A checkpoint in the official FOMM layout with random tensors, built from fomm-state-dicts.json, with
    the training-only entries the released files carry (discriminator, optimisers, epoch)."""
    spec = _spec()["configs"][name]["modules"]
    g = torch.Generator().manual_seed(seed)
    ckpt = {}
    for module, entry in spec.items():
        ckpt[module] = {key: torch.tensor(3) if key.endswith("num_batches_tracked")
                        else (torch.rand(shape, generator=g) * 0.02 + 0.5).to(dtype)
                        for key, shape in entry["state_dict"]}
    if discriminator_in is not None:
        ckpt["discriminator"] = {"discs.1.down_blocks.0.conv.weight": torch.zeros(64, discriminator_in, 4, 4),
                                 "discs.1.conv.weight": torch.zeros(1, 512, 1, 1)}
    for opt in ("optimizer_generator", "optimizer_kp_detector", "optimizer_discriminator"):
        ckpt[opt] = {"state": {}, "param_groups": [{"lr": 2e-4, "params": [0, 1]}]}
    ckpt["epoch"] = 149
    return ckpt


@pytest.mark.parametrize("name", CONFIGS)
def test_builtin_configs_are_the_official_model_params(name):
    want = _spec()["configs"][name]["model_params"]
    cfg = load_config(f"fomm-{name}")
    assert cfg.family == "fomm" and cfg.image_size == 256 and cfg.num_kp == 10 and cfg.estimate_jacobian
    got = cfg.to_yaml_dict()["model_params"]
    for section in ("common_params", "kp_detector_params", "generator_params", "discriminator_params"):
        assert got[section] == want[section], section


def test_official_fomm_yaml_is_recognised(tmp_path):
    """An official FOMM YAML (all its sections) gives the same config as the built-in name."""
    mp = _spec()["configs"]["vox-256"]["model_params"]
    doc = {"dataset_params": {"root_dir": "data/vox-png", "frame_shape": [256, 256, 3], "id_sampling": True},
           "model_params": mp, "train_params": {"num_epochs": 100, "batch_size": 40},
           "reconstruction_params": {"num_videos": 1000}, "animate_params": {"num_pairs": 50},
           "visualizer_params": {"kp_size": 5}}
    path = tmp_path / "vox-256.yaml"
    path.write_text(yaml.safe_dump(doc))
    cfg = load_config(path)
    assert cfg.name == "vox-256" and dataclasses.replace(cfg, name="fomm-vox-256") == load_config("fomm-vox-256")
    assert cfg.extra["train_params"]["batch_size"] == 40  # the other sections are kept as given


def test_bad_fomm_config_is_one_line(tmp_path):
    path = tmp_path / "bad.yaml"
    path.write_text(yaml.safe_dump({"model_params": {"common_params": {"num_kp": 10},
                                                     "kp_detector_params": {"temprature": 0.1},
                                                     "generator_params": {"dense_motion_params": {}}}}))
    with pytest.raises(ConfigError, match="unexpected model parameter"):
        load_config(path)
    with pytest.raises(ConfigError, match="fomm-vox-256"):  # the unknown-name message lists FOMM's names
        load_config("fomm-vox-999")


@pytest.mark.parametrize("name", CONFIGS)
def test_official_layout_loads_strictly_and_is_recognised(tmp_path, name):
    spec = _spec()["configs"][name]["modules"]
    adv = name == "vox-adv-256"
    path = tmp_path / f"{name}-cpk.pth.tar"
    torch.save(official_fomm_state(name, discriminator_in=13 if adv else 3), path)
    loaded = load_checkpoint(path, f"fomm-{name}")
    assert loaded.config.family == "fomm" and not loaded.has_avd and not loaded.has_bg
    for module in ("kp_detector", "generator"):
        net = getattr(loaded.model, module)
        assert sum(p.numel() for p in net.parameters()) == spec[module]["num_parameters"]
        assert next(net.parameters()).dtype == torch.float32
        assert set(net.state_dict()) == {k for k, _ in spec[module]["state_dict"]}
    # without --config: recognised as FOMM; a keypoint-aware discriminator (vox-adv) picks the adv config
    with pytest.warns(UserWarning, match=f"match the built-in fomm-{name}"):
        again = load_checkpoint(path)
    assert again.config.name == f"fomm-{name}" and again.model_hash == loaded.model_hash


def test_legacy_serialisation_loads(tmp_path, fomm_golden_model):
    ckpt = torch.load(FOMM_GOLDEN / "checkpoint.pth.tar", map_location="cpu", weights_only=True)
    path = tmp_path / "legacy.pth.tar"
    torch.save(ckpt, path, _use_new_zipfile_serialization=False)
    with open(path, "rb") as f:
        assert not f.read(4).startswith(b"PK")  # really the pre-zip format
    loaded = load_checkpoint(path, FOMM_GOLDEN / "config.yaml")
    assert loaded.model_hash == fomm_golden_model.model_hash


@pytest.fixture(scope="module")
def golden_ckpt():
    return torch.load(FOMM_GOLDEN / "checkpoint.pth.tar", map_location="cpu", weights_only=True)


def _save(tmp_path, ckpt):
    path = tmp_path / "bad.pth.tar"
    torch.save(ckpt, path)
    return path


def _with(ckpt, module, change):
    ckpt = dict(ckpt)
    sd = dict(ckpt[module])
    change(sd)
    ckpt[module] = sd
    return ckpt


def test_missing_key_names_module_and_key(tmp_path, golden_ckpt):
    ckpt = _with(golden_ckpt, "kp_detector", lambda sd: sd.pop("jacobian.bias"))
    with pytest.raises(CheckpointError, match=r"kp_detector is missing 'jacobian.bias' \(expected shape \(40,\)\)"):
        load_checkpoint(_save(tmp_path, ckpt), FOMM_GOLDEN / "config.yaml")


def test_renamed_key_is_refused(tmp_path, golden_ckpt):
    ckpt = _with(golden_ckpt, "generator", lambda sd: sd.update({"final.weight_renamed": sd.pop("final.weight")}))
    with pytest.raises(CheckpointError, match="generator is missing 'final.weight'"):
        load_checkpoint(_save(tmp_path, ckpt), FOMM_GOLDEN / "config.yaml")


def test_unexpected_key_is_refused(tmp_path, golden_ckpt):
    ckpt = _with(golden_ckpt, "generator", lambda sd: sd.update({"extra.weight": torch.zeros(2)}))
    with pytest.raises(CheckpointError, match="generator has unexpected key 'extra.weight'"):
        load_checkpoint(_save(tmp_path, ckpt), FOMM_GOLDEN / "config.yaml")


def test_misshaped_key_names_both_shapes(tmp_path, golden_ckpt):
    ckpt = _with(golden_ckpt, "generator",
                 lambda sd: sd.update({"dense_motion_network.mask.bias": torch.zeros(12)}))
    with pytest.raises(CheckpointError, match=r"generator.dense_motion_network.mask.bias has shape \(12,\), "
                                              r"the config expects \(11,\)"):
        load_checkpoint(_save(tmp_path, ckpt), FOMM_GOLDEN / "config.yaml")


def test_reduced_widths_without_config_ask_for_it(golden_ckpt):
    with pytest.raises(CheckpointError, match="match none of the built-in FOMM configs"):
        load_checkpoint(FOMM_GOLDEN / "checkpoint.pth.tar")


def test_wrong_family_config_is_one_line():
    with pytest.raises(CheckpointError, match="is a FOMM checkpoint .* TPSMM config: pass --config fomm-vox-256"):
        load_checkpoint(FOMM_GOLDEN / "checkpoint.pth.tar", "vox-256")
    with pytest.raises(CheckpointError, match="is not a FOMM checkpoint .* is a FOMM config"):
        load_checkpoint(GOLDEN / "checkpoint.pth.tar", "fomm-vox-256")


def test_incomplete_fomm_checkpoint(tmp_path, golden_ckpt):
    ckpt = {k: v for k, v in golden_ckpt.items() if k != "kp_detector"}
    with pytest.raises(CheckpointError, match="no kp_detector weights .* not a complete FOMM checkpoint"):
        load_checkpoint(_save(tmp_path, ckpt), FOMM_GOLDEN / "config.yaml")


def test_safetensors_carry_family_and_config(tmp_path, fomm_golden_model):
    from safetensors import safe_open

    path = save_safetensors(fomm_golden_model.model, tmp_path / "fomm.safetensors", {"source": "test"})
    with safe_open(str(path), framework="pt") as f:
        meta = f.metadata()
    assert meta["family"] == "fomm" and yaml.safe_load(meta["config"])["family"] == "fomm"
    loaded = load_checkpoint(path)  # no --config needed
    assert loaded.config == fomm_golden_model.config and loaded.config.family == "fomm"
    assert loaded.model_hash == fomm_golden_model.model_hash and loaded.metadata["source"] == "test"
    assert not loaded.has_avd


def test_export_weights_converts_an_official_fomm_checkpoint(tmp_path, fomm_golden_model):
    from splinecam.cli import main

    out = tmp_path / "fomm.safetensors"
    assert main(["export-weights", "--checkpoint", str(FOMM_GOLDEN / "checkpoint.pth.tar"), "--config",
                 str(FOMM_GOLDEN / "config.yaml"), "--out", str(out)]) == 0
    loaded = load_checkpoint(out)
    assert loaded.config.family == "fomm" and loaded.model_hash == fomm_golden_model.model_hash
    assert "checkpoint.pth.tar" in loaded.metadata["source"]
