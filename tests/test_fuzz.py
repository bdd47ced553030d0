"""Fuzzing the places where numbers and structures come in from outside (issue #15): every subcommand's
numeric flags, model configs, remembered state, weights metadata, train_params, export manifests.

Random types, NaN, ±inf, huge, negative, empty: each input is either accepted with a value inside its
declared range, or refused with the loader's one user error (argparse's exit 2, ConfigError,
CheckpointError, …). Anything else — a traceback — fails the test. Seeds are fixed: a failure replays.
"""

from __future__ import annotations

import argparse
import json
import math
import random
import warnings

import numpy as np
import pytest

from splinecam.cli import build_parser
from splinecam.engines.validate import NumberArg

SPECIAL_TEXT = ["nan", "NaN", "-nan", "inf", "-inf", "Infinity", "1e309", "-1e309", "0", "-0", "0.0", "1", "-1", "2",
                "3", "10", "255", "256", "4096", "99999", "1e9", "1e10", "9" * 40, "-" + "9" * 40, "", " ", "abc",
                "1.5", "2.5", "0.0001", "1e-300", "0x10", "1_000", "+5", " 7 ", "٣", "None", "true", "[1]", "1,5",
                "5e-324", "-1e-9", "4097", "1000", "1000.0001", "65", "64", "32", "31", "2147483648", "4294967295",
                "4294967296"]


def _random_text(rng: random.Random) -> str:
    r = rng.random()
    if r < 0.3:
        return f"{rng.uniform(-9.99, 9.99):.3f}e{rng.randint(-400, 400)}"
    if r < 0.55:
        return str(rng.randint(-10 ** rng.randint(0, 30), 10 ** rng.randint(0, 30)))
    if r < 0.7:
        return repr(rng.uniform(-5000, 5000))
    return "".join(rng.choice("0123456789.-+eEinfaINxX_ ,") for _ in range(rng.randint(0, 8)))


def _random_value(rng: random.Random, depth: int = 0):
    """Any JSON / YAML-ish value: wrong types, NaN, inf, huge, negative, empty, nested."""
    pool = [None, True, False, 0, -1, 1, 2, 3, 10, 64, 256, 2 ** 31, 2 ** 64, -(2 ** 64), 0.5, -0.5, 0.25, 1e308,
            -1e308, float("nan"), float("inf"), float("-inf"), "", "abc", "NaN", "10", "1e999", "fast", [], {}]
    r = rng.random()
    if depth < 3 and r < 0.12:
        return [_random_value(rng, depth + 1) for _ in range(rng.randint(0, 4))]
    if depth < 3 and r < 0.2:
        return {rng.choice(["a", "num_tps", "width", "0", ""]): _random_value(rng, depth + 1) for _ in range(rng.randint(0, 3))}
    if r < 0.3:
        return rng.uniform(-1e6, 1e6)
    if r < 0.4:
        return rng.randint(-1000, 100000)
    return rng.choice(pool)


def _subparsers() -> dict[str, argparse.ArgumentParser]:
    parser = build_parser()
    sub = next(a for a in parser._actions if isinstance(a, argparse._SubParsersAction))
    return dict(sub.choices)


def _required(p: argparse.ArgumentParser) -> list[str]:
    argv = []
    for a in p._actions:
        if a.required and a.option_strings:
            argv += [a.option_strings[0], "x"]
    return argv


def test_every_numeric_flag_goes_through_the_validation_layer():
    bare = [(name, a.option_strings) for name, p in _subparsers().items() for a in p._actions
            if a.type in (int, float)]
    assert bare == [], f"numeric flags not checked by engines/validate.py (use number_arg): {bare}"


def test_fuzz_numeric_flags(capsys):
    rng = random.Random(15)
    parser = build_parser()
    checked = 0
    for name, p in _subparsers().items():
        base = [name, *_required(p)]
        for a in p._actions:
            if not isinstance(a.type, NumberArg):
                continue
            flag = a.option_strings[0]
            for text in SPECIAL_TEXT + [_random_text(rng) for _ in range(60)]:
                for argv in ([*base, f"{flag}={text}"], [*base, flag, text]):
                    try:
                        ns = parser.parse_args(argv)
                    except SystemExit as e:
                        err = capsys.readouterr().err.strip().splitlines()
                        assert e.code == 2 and len(err) == 1 and "error:" in err[0], (argv, err)
                        continue
                    value = getattr(ns, a.dest)
                    for v in (value if isinstance(value, list) else [value]):
                        assert isinstance(v, a.type.range.kind) and not isinstance(v, bool), (argv, v)
                        assert math.isfinite(v) and a.type.range.contains(v), (argv, v)
                    checked += 1
    assert checked > 100  # the fuzz did accept good values too


def _tiny_config() -> dict:
    return {"name": "t", "image_size": 64, "dataset_params": {"frame_shape": [64, 64, 3]}, "model_params": {
        "common_params": {"num_tps": 10, "num_channels": 3, "bg": True, "multi_mask": True},
        "generator_params": {"block_expansion": 8, "max_features": 16, "num_down_blocks": 3},
        "dense_motion_params": {"block_expansion": 8, "max_features": 16, "num_blocks": 3, "scale_factor": 0.25},
        "avd_network_params": {"id_bottle_size": 16, "pose_bottle_size": 16},
        "kp_detector_params": {"width": 8, "depth": 1}},
        "train_params": {"num_epochs": 4, "num_repeats": 4, "epoch_milestones": [3], "lr_generator": 2e-4,
                         "batch_size": 4, "scales": [1, 0.5], "dropout_epoch": 2, "bg_start": 1,
                         "loss_weights": {"perceptual": [10, 10], "warp_loss": 10}}}


def _paths(d, prefix=()):
    for k, v in d.items():
        yield prefix + (k,)
        if isinstance(v, dict):
            yield from _paths(v, prefix + (k,))


def _mutate(rng: random.Random, cfg: dict) -> dict:
    import copy

    cfg = copy.deepcopy(cfg)
    for _ in range(rng.randint(1, 3)):
        paths = list(_paths(cfg))
        if not paths:
            break
        path = rng.choice(paths)
        node = cfg
        for k in path[:-1]:
            node = node[k] if isinstance(node, dict) and isinstance(node.get(k), dict) else None
            if node is None:
                break
        if node is None:
            continue
        if rng.random() < 0.15:
            node.pop(path[-1], None)
        else:
            node[path[-1]] = _random_value(rng)
    return cfg


def test_fuzz_model_configs():
    from splinecam.engines.errors import ConfigError
    from splinecam.engines.tpsmm.config import LIMITS, ModelConfig, config_from_dict

    rng = random.Random(1515)
    good = bad = 0
    for _ in range(1500):
        data = _mutate(rng, _tiny_config()) if rng.random() < 0.9 else _random_value(rng)
        try:
            cfg = config_from_dict(data, "fuzz")
        except ConfigError:
            bad += 1
            continue
        good += 1
        assert isinstance(cfg, ModelConfig)
        for section in (cfg.generator, cfg.dense_motion, cfg.avd, cfg.keypoint):
            for k, v in vars(section).items():
                if k in LIMITS:
                    assert LIMITS[k].contains(v), (k, v)
        assert LIMITS["num_tps"].contains(cfg.num_tps) and isinstance(cfg.bg, bool)
    assert good > 50 and bad > 500


def test_fuzz_train_params():
    from splinecam.engines.errors import SplinecamError
    from splinecam.engines.tpsmm.config import config_from_dict
    from splinecam.training.options import TrainOptions, TrainSchedule

    rng = random.Random(7)
    cfg = config_from_dict(_tiny_config(), "t")
    for _ in range(800):
        tp = _mutate(rng, {"train_params": _tiny_config()["train_params"]}).get("train_params", {})
        if rng.random() < 0.1:
            tp = _random_value(rng)
        import dataclasses

        c = dataclasses.replace(cfg, train_params=tp if isinstance(tp, dict) else {"num_epochs": tp})
        try:
            s = TrainSchedule.from_config(c, TrainOptions(data="d", out="o"))
        except SplinecamError:
            continue
        assert s.num_epochs >= 1 and s.batch_size >= 1 and math.isfinite(s.lr) and s.lr > 0
        assert all(math.isfinite(x) and x > 0 for x in s.scales)


def test_fuzz_remembered_state(tmp_path, monkeypatch):
    from splinecam.live.state import CHECKS, LiveState, load_state, save_state

    monkeypatch.setenv("XDG_CONFIG_HOME", str(tmp_path))
    rng = random.Random(99)
    path = tmp_path / "state.json"
    fields = list(CHECKS)
    for i in range(600):
        if rng.random() < 0.1:
            text = rng.choice(["", "{", "[]", "null", "NaN", '"abc"', "\x00\xff", json.dumps(_random_value(rng))])
        else:
            data = {f: _random_value(rng) for f in rng.sample(fields, rng.randint(0, len(fields)))}
            if rng.random() < 0.3:
                data["calibration"] = [[rng.choice([0.1, float("nan"), "x", 1e9, True]), 0.2]
                                       for _ in range(rng.randint(0, 3))]
            text = json.dumps(data)
        path.write_text(text, errors="surrogateescape")
        st = load_state(path, warn=lambda _msg: None)
        assert isinstance(st, LiveState)
        for f in fields:
            v = getattr(st, f)
            if v is not None:
                assert CHECKS[f](v, f) == v     # what was kept passes its check again
        out = tmp_path / f"saved{i % 3}.json"
        save_state(st, out)

        def no_constants(name):
            raise AssertionError(f"{name} written to the state")

        json.loads(out.read_text(), parse_constant=no_constants)   # no NaN / Infinity written back


def test_fuzz_weights_metadata():
    import yaml

    from splinecam.engines.errors import CheckpointError
    from splinecam.engines.tpsmm.checkpoint import config_from_metadata, metadata_info

    rng = random.Random(3)
    for _ in range(600):
        r = rng.random()
        if r < 0.4:
            text = yaml.safe_dump(_mutate(rng, _tiny_config()))
        elif r < 0.7:
            text = json.dumps(_random_value(rng))
        else:
            text = "".join(rng.choice("ab:{}[]-\n '\"!&*%") for _ in range(rng.randint(0, 30)))
        md = {"config": text, "training_json": rng.choice([text, json.dumps(_random_value(rng))]),
              f"x{rng.randint(0, 9)}_json": text, "source": text}
        try:
            config_from_metadata(md, "w.safetensors")
        except CheckpointError:
            pass
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            info = metadata_info(md, "w.safetensors")
        training = info.get("training")
        assert training is None or isinstance(training, dict)
        if isinstance(training, dict) and training.get("landmark_indices") is not None:
            assert all(isinstance(i, int) for i in training["landmark_indices"])


def test_fuzz_export_manifests(tmp_path):
    from splinecam.engines.errors import EngineCacheError
    from splinecam.engines.export.manifest import MANIFEST_NAME, Manifest

    rng = random.Random(11)
    good = {"model_hash": "ab", "config_name": "t", "image_size": 64, "num_kp": 50, "num_tps": 10,
            "precision": "fp32", "opset": 17, "splinecam_version": "0", "torch_version": "0", "format": 1,
            "graphs": {"generator": {"name": "generator", "file": "generator.onnx", "sha256": "00",
                                     "inputs": [{"name": "a", "shape": [1, 2], "dtype": "float32"}], "outputs": []}}}
    (tmp_path / "generator.onnx").write_bytes(b"x")
    for _ in range(500):
        data = _mutate(rng, good) if rng.random() < 0.85 else _random_value(rng)
        (tmp_path / MANIFEST_NAME).write_text(json.dumps(data))
        try:
            m = Manifest.read(tmp_path)
            m.verify(tmp_path, ("generator",))
        except EngineCacheError:
            continue


def test_fuzz_arrays():
    from splinecam.engines.validate import ValidationError, check_array

    rng = random.Random(5)
    for _ in range(2000):
        v = _random_value(rng)
        try:
            a = check_array(v, "x", (None, 2), low=-10, high=10)
        except ValidationError:
            continue
        assert a.dtype == np.float32 and a.ndim == 2 and a.shape[1] == 2 and np.isfinite(a).all()


@pytest.mark.parametrize("seed", range(3))
def test_fuzz_check_output(tmp_path, seed):
    """Random paths never escape the output checks as anything but OutputError."""
    from splinecam.engines.errors import OutputError
    from splinecam.engines.outputs import KINDS, check_output

    rng = random.Random(seed)
    (tmp_path / "f.mp4").write_bytes(b"x")
    (tmp_path / "d").mkdir()
    parts = ["f.mp4", "d", "x.avi", "", ".", "..", "a" * 300, "new", "x.mp4", "y.PNG", "z", "f.mp4/x.mp4", "\u00e9.mkv"]
    for _ in range(300):
        p = tmp_path.joinpath(*[rng.choice(parts) for _ in range(rng.randint(1, 3))])
        try:
            check_output(p, "--out", rng.choice(KINDS), inputs=[tmp_path / "f.mp4", None, "0"])
        except OutputError:
            pass
