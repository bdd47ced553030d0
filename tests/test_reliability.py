"""Issue #15, the faults a real user causes: each probe reproduced (signals: tests/test_signals.py).

Sections follow the mechanisms: outputs (engines/outputs.py), validation (engines/validate.py),
verified caches (engines/cache_store.py), the output guard (engines/output_guard.py). Command-line probes
run ``splinecam.cli.main`` in-process and check the contract: exit 2, one ``splinecam…: error:`` line
naming the flag / file, no traceback, nothing overwritten.
"""

from __future__ import annotations

import hashlib
import json
import os
import shutil
import stat
import subprocess
import time
from pathlib import Path

import numpy as np
import pytest
import torch

from splinecam.cli import main
from splinecam.engines.errors import CheckpointError, ConfigError, EngineCacheError, OutputError
from tests.conftest import GOLDEN, REPO

CLIP = REPO / "live" / "assets" / "webcam.mp4"
AVATAR = REPO / "live" / "assets" / "mona.jpg"
GOLDEN_ARGS = ["--checkpoint", str(GOLDEN / "checkpoint.pth.tar"), "--config", str(GOLDEN / "config.yaml"),
               "--backend", "torch", "--precision", "fp32"]


@pytest.fixture(autouse=True)
def _homes(tmp_path, monkeypatch):
    monkeypatch.setenv("XDG_CONFIG_HOME", str(tmp_path / "config"))
    monkeypatch.setenv("SPLINECAM_CACHE", str(tmp_path / "cache"))


def _sha(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


def one_error(capsys, rc, *needles):
    """The CLI contract for a user error: exit 2, exactly one line on stderr, naming what was wrong."""
    err = [ln for ln in capsys.readouterr().err.strip().splitlines() if ln.strip()]
    assert rc == 2, err
    assert len(err) == 1, err
    assert "error:" in err[0] and "Traceback" not in err[0]
    for n in needles:
        assert n in err[0], err[0]
    return err[0]


@pytest.fixture
def readonly_dir(tmp_path):
    """A folder nobody can write into — also root, for whom permission bits do not count (chattr +i)."""
    d = tmp_path / "ro"
    d.mkdir()
    d.chmod(0o555)
    immutable = False
    from splinecam.engines.cache_store import writable

    if writable(d) is None:
        immutable = subprocess.run(["chattr", "+i", str(d)], capture_output=True).returncode == 0
    if writable(d) is None:
        d.chmod(0o755)
        pytest.skip("cannot make a read-only folder here (root without chattr)")
    yield d
    if immutable:
        subprocess.run(["chattr", "-i", str(d)], capture_output=True)
    d.chmod(0o755)


# ============================================================================ outputs (probes 2, 7, 9)


def test_check_output_unit(tmp_path):
    from splinecam.engines.outputs import check_output

    src = tmp_path / "in.mp4"
    src.write_bytes(b"x")
    link = tmp_path / "link.mp4"
    link.symlink_to(src)
    hard = tmp_path / "hard.mp4"
    os.link(src, hard)
    for same in (src, link, hard, tmp_path / "." / "in.mp4"):
        with pytest.raises(OutputError, match="also an input"):
            check_output(same, "--out", "video", inputs=[src])
    with pytest.raises(OutputError, match="is a folder"):
        check_output(tmp_path, "--out", "video")
    for bad in ("x.avi", "x.gif", "x", "x.mp5"):
        with pytest.raises(OutputError, match="not a video container"):
            check_output(tmp_path / bad, "--out", "video")
    assert check_output(tmp_path / "new" / "x.MKV", "--out", "video") == tmp_path / "new" / "x.MKV"
    with pytest.raises(OutputError, match="is a file, not a folder"):
        check_output(src, "--out", "dir")
    with pytest.raises(OutputError, match="is a file, not a folder"):
        check_output(src / "sub" / "x.json", "--json")


def test_inputs_are_never_overwritten(tmp_path, capsys):
    clip, src = tmp_path / "clip.mp4", tmp_path / "source.png"
    shutil.copy(CLIP, clip)
    import cv2

    cv2.imwrite(str(src), cv2.imread(str(AVATAR)))
    before = {p: _sha(p) for p in (clip, src)}
    one_error(capsys, main(["animate", "--source", str(src), "--driving", str(clip), "--out", str(clip)]),
              "--out", "also an input")
    one_error(capsys, main(["animate", "--source", str(src), "--driving", str(clip), "--out", str(src)]),
              "--out", "also an input")
    one_error(capsys, main(["live", "--camera", str(clip), "--avatar", str(src), "--record", str(clip),
                            "--no-preview", "--no-virtual-camera", "--no-remember"]), "--record", "also an input")
    one_error(capsys, main(["demo", "--avatar", str(src), "--out", str(src)]), "--out", "also an input")
    assert {p: _sha(p) for p in (clip, src)} == before


@pytest.mark.parametrize("argv,needle", [
    (["animate", "--source", str(AVATAR), "--driving", str(CLIP), "--out", "{dir}"], "--out"),
    (["live", "--camera", str(CLIP), "--avatar", str(AVATAR), "--record", "{dir}", "--no-preview"], "--record"),
    (["live", "--camera", str(CLIP), "--avatar", str(AVATAR), "--metrics", "{dir}", "--no-preview"], "--metrics"),
    (["evaluate", "--data", str(CLIP), "--json", "{dir}"], "--json"),
    (["export", "--out", "{file}"], "--out"),
    (["export-weights", "--run", "x", "--out", "{dir}"], "--out"),
], ids=["animate", "live-record", "live-metrics", "evaluate-json", "export-file", "export-weights"])
def test_unusable_outputs_fail_before_any_work(tmp_path, capsys, argv, needle):
    d = tmp_path / "existing"
    d.mkdir()
    f = tmp_path / "a_file"
    f.write_text("x")
    argv = [a.replace("{dir}", str(d)).replace("{file}", str(f)) for a in argv]
    t0 = time.perf_counter()
    line = one_error(capsys, main(argv), needle)
    assert "folder" in line
    assert time.perf_counter() - t0 < 20            # refused up front, not after a model load and a run


@pytest.mark.parametrize("argv,needle", [
    (["evaluate", "--data", str(CLIP), "--json", "{ro}/e.json"], "--json"),
    (["live", "--camera", str(CLIP), "--avatar", str(AVATAR), "--metrics", "{ro}/m.json", "--no-preview"],
     "--metrics"),
    (["live", "--camera", str(CLIP), "--avatar", str(AVATAR), "--record", "{ro}/r.mp4", "--no-preview"],
     "--record"),
    (["animate", "--source", str(AVATAR), "--driving", str(CLIP), "--out", "{ro}/a.mp4"], "--out"),
    (["export", "--out", "{ro}/graphs"], "--out"),
    (["prepare-data", "--videos", str(CLIP), "--out", "{ro}/data"], "--out"),
    (["export-weights", "--run", "x", "--out", "{ro}/w.safetensors"], "--out"),
], ids=["evaluate-json", "live-metrics", "live-record", "animate", "export", "prepare-data", "export-weights"])
def test_unwritable_outputs_fail_before_any_work(readonly_dir, capsys, argv, needle):
    argv = [a.replace("{ro}", str(readonly_dir)) for a in argv]
    line = one_error(capsys, main(argv), needle)
    assert "writable" in line or "cannot create" in line


@pytest.mark.parametrize("audio", [False, True])
def test_outputs_get_ordinary_permissions(tmp_path, audio):
    from splinecam.engines.media import VideoWriter, ffmpeg_exe
    from splinecam.engines.outputs import default_mode, write_text_atomic

    src = None
    if audio:
        src = tmp_path / "with_audio.mp4"
        subprocess.run([ffmpeg_exe(), "-y", "-loglevel", "error", "-f", "lavfi", "-i", "testsrc=size=64x48:rate=10:d=1",
                        "-f", "lavfi", "-i", "sine=d=1", "-c:v", "libx264", "-pix_fmt", "yuv420p", "-c:a", "aac",
                        "-shortest", str(src)], check=True)
    out = tmp_path / "out.mp4"
    with VideoWriter(out, 10, (64, 48), audio_from=src) as w:
        for _ in range(5):
            w.write(np.full((48, 64, 3), 128, np.uint8))
    assert stat.S_IMODE(out.stat().st_mode) == default_mode()
    j = write_text_atomic(tmp_path / "x.json", "{}")
    assert stat.S_IMODE(j.stat().st_mode) == default_mode()


def test_bad_fps_leaves_no_part_file(tmp_path):
    from splinecam.engines.media import VideoWriter

    for fps in (float("nan"), float("inf"), 0, -5, "25"):
        with pytest.raises(ValueError):
            VideoWriter(tmp_path / "o.mp4", fps, (64, 48))
    assert list(tmp_path.iterdir()) == []


@pytest.mark.parametrize("name", ["out.avi", "out.gif", "out"])
@pytest.mark.parametrize("cmd", ["animate", "live"])
def test_unknown_containers_are_refused_not_written_as_mp4(tmp_path, capsys, cmd, name):
    out = str(tmp_path / name)
    argv = (["animate", "--source", str(AVATAR), "--driving", str(CLIP), "--out", out] if cmd == "animate" else
            ["live", "--camera", str(CLIP), "--avatar", str(AVATAR), "--record", out, "--no-preview", "--no-remember"])
    one_error(capsys, main(argv), "is not a video container", ".mp4")
    assert list(tmp_path.iterdir()) == []


def test_settings_are_remembered_even_when_the_end_of_the_run_fails(tmp_path, capsys, monkeypatch):
    """An --metrics file that cannot be written at the end used to lose the remembered state too."""
    from splinecam.live.metrics import LiveMetrics
    from splinecam.live.state import state_path

    def full_disk(self, path):
        raise OutputError(f"cannot write --metrics {path}: No space left on device")

    monkeypatch.setattr(LiveMetrics, "write", full_disk)
    rc = main(["live", "--camera", str(CLIP), "--avatar", str(AVATAR), "--no-preview", "--no-virtual-camera",
               "--max-frames", "2", "--metrics", str(tmp_path / "m.json"), *GOLDEN_ARGS])
    err = capsys.readouterr().err
    assert rc == 2 and "No space left" in err and "Traceback" not in err
    assert json.loads(state_path().read_text())["avatar"] == str(AVATAR.resolve())


def test_broken_ffmpeg_env_is_one_line(tmp_path, capsys, monkeypatch):
    monkeypatch.setenv("IMAGEIO_FFMPEG_EXE", "/nonexistent")
    one_error(capsys, main(["animate", "--source", str(AVATAR), "--driving", str(CLIP), "--out",
                            str(tmp_path / "o.mp4"), *GOLDEN_ARGS]), "IMAGEIO_FFMPEG_EXE")


# ============================================================================ validation (probes 4, 5, 6, 8, 9)


@pytest.mark.parametrize("argv,flag", [
    (["live", "--fps", "nan", "--record", "o.mp4"], "--fps"),
    (["live", "--fps", "inf", "--record", "o.mp4"], "--fps"),
    (["live", "--fps", "nan", "--realtime"], "--fps"),
    (["demo", "--fps", "inf"], "--fps"),
    (["demo", "--fps", "-inf"], "--fps"),
    (["live", "--smooth-min-cutoff", "nan"], "--smooth-min-cutoff"),
    (["live", "--smooth-beta", "nan"], "--smooth-beta"),
    (["live", "--smooth-beta", "-1"], "--smooth-beta"),
    (["live", "--camera-fps", "0"], "--camera-fps"),
    (["animate", "--source", "s", "--driving", "d", "--out", "o.mp4", "--output-size", "0"], "--output-size"),
    (["animate", "--source", "s", "--driving", "d", "--out", "o.mp4", "--output-size", "-5"], "--output-size"),
    (["animate", "--source", "s", "--driving", "d", "--out", "o.mp4", "--output-size", "99999"], "--output-size"),
    (["animate", "--source", "s", "--driving", "d", "--out", "o.mp4", "--max-frames", "0"], "--max-frames"),
    (["animate", "--source", "s", "--driving", "d", "--out", "o.mp4", "--max-frames", "-1"], "--max-frames"),
    (["train", "--config", "c", "--data", "d", "--out", "o", "--batch-size", "0"], "--batch-size"),
    (["train", "--config", "c", "--data", "d", "--out", "o", "--image-size", "0"], "--image-size"),
    (["train", "--config", "c", "--data", "d", "--out", "o", "--max-steps", "-1"], "--max-steps"),
    (["train", "--config", "c", "--data", "d", "--out", "o", "--lr", "nan"], "--lr"),
    (["evaluate", "--data", "d", "--max-frames", "-1"], "--max-frames"),
    (["evaluate", "--data", "d", "--batch-size", "0"], "--batch-size"),
    (["prepare-data", "--videos", "v", "--out", "o", "--size", "1e9"], "--size"),
])
def test_flags_refuse_nan_inf_and_out_of_range(tmp_path, capsys, monkeypatch, argv, flag):
    monkeypatch.chdir(tmp_path)
    with pytest.raises(SystemExit) as e:
        main(argv)
    one_error(capsys, e.value.code, f"argument {flag}")
    assert list(tmp_path.glob("*.mp4")) == [] and list(tmp_path.glob(".*part*")) == []


def test_range_and_array_checks():
    from splinecam.engines.validate import FPS, Range, ValidationError, check_array

    assert FPS.check(25, "fps") == 25.0 and Range(int, 1, 9).check(3.0, "n") == 3
    for bad in (float("nan"), float("inf"), True, "25", None, 0, 1001, [25]):
        with pytest.raises(ValidationError):
            FPS.check(bad, "--fps")
    with pytest.raises(ValidationError):
        Range(int, 1, 9).check(2.5, "n")
    assert check_array([[0, 1], [2, 3]], "c", (None, 2)).shape == (2, 2)
    for bad in ("abc", [[1, 2], [3]], [[1, "x"]], [[float("nan"), 0]], [[True, 1]], [1, 2], [[1, 2, 3]], [[99, 0]]):
        with pytest.raises(ValidationError):
            check_array(bad, "calibration", (None, 2), low=-10, high=10)


@pytest.mark.parametrize("field,value", [
    ("calibration", "abc"), ("calibration", [[0.1, 0.2], [0.3]]), ("calibration", [[float("nan"), 0.0]] * 50),
    ("calibration", [[1e9, 0.0]] * 50), ("smooth_min_cutoff", "fast"), ("smooth_min_cutoff", float("nan")),
    ("smooth_min_cutoff", -1), ("smooth_beta", float("inf")), ("smoothing", "yes"), ("mirror", 1),
    ("mode", "sideways"), ("avatar", 5), ("camera", ["0"]),
])
def test_bad_remembered_state_is_ignored_and_never_written_back(tmp_path, field, value):
    from splinecam.live.state import load_state, save_state, state_path

    good = {"avatar": str(AVATAR), "camera": "0", "mode": "relative", "smooth_beta": 3.0, "mirror": True,
            "calibration": [[0.1, 0.2]] * 50, "smooth_min_cutoff": 2.0, "smoothing": True}
    p = state_path()
    p.parent.mkdir(parents=True)
    p.write_text(json.dumps({**good, field: value}))
    warned = []
    st = load_state(warn=warned.append)
    assert getattr(st, field) is None                       # ignored …
    assert len(warned) == 1 and field in warned[0]          # … with one line naming it
    for k, v in good.items():
        if k != field:
            assert getattr(st, k) == v
    save_state(st)
    text = p.read_text()
    assert "NaN" not in text and "Infinity" not in text and json.loads(text)[field] is None   # never written back
    assert load_state(warn=warned.append) == st and len(warned) == 1


def test_bad_state_gives_the_defaults_not_a_black_face(tmp_path):
    """NaN smoothing from state.json would have animated a black face from frame 2 (probe 4)."""
    import argparse

    from splinecam.live.commands import add_live_commands, options_from_args
    from splinecam.live.smoothing import DEFAULT_BETA, DEFAULT_MIN_CUTOFF
    from splinecam.live.state import load_state, state_path

    p = state_path()
    p.parent.mkdir(parents=True)
    p.write_text('{"avatar": "%s", "smooth_min_cutoff": NaN, "smooth_beta": NaN, "calibration": "abc"}' % AVATAR)
    parser = argparse.ArgumentParser()
    add_live_commands(parser.add_subparsers(dest="cmd"))
    opts = options_from_args(parser.parse_args(["live"]), load_state(warn=lambda _: None))
    assert opts.smoothing.min_cutoff == DEFAULT_MIN_CUTOFF and opts.smoothing.beta == DEFAULT_BETA
    assert opts.calibration is None and opts.avatar == str(AVATAR)


def _golden_sd():
    return torch.load(GOLDEN / "checkpoint.pth.tar", map_location="cpu", weights_only=True)


@pytest.mark.parametrize("bad", [float("nan"), float("inf")])
def test_weights_with_non_finite_values_are_refused(tmp_path, bad):
    from splinecam.engines.tpsmm.checkpoint import load_checkpoint, save_safetensors

    data = _golden_sd()
    key = next(k for k, v in data["inpainting_network"].items() if v.is_floating_point() and v.numel() > 4)
    data["inpainting_network"][key] = data["inpainting_network"][key].clone()
    data["inpainting_network"][key].view(-1)[3] = bad
    pth = tmp_path / "nan.pth.tar"
    torch.save(data, pth)
    with pytest.raises(CheckpointError, match=f"inpainting_network.{key} holds 1 NaN/inf"):
        load_checkpoint(pth, GOLDEN / "config.yaml")
    good = load_checkpoint(GOLDEN / "checkpoint.pth.tar", GOLDEN / "config.yaml")
    with torch.no_grad():
        next(good.model.dense_motion_network.parameters()).view(-1)[0] = bad
    st = save_safetensors(good.model, tmp_path / "nan.safetensors")
    with pytest.raises(CheckpointError, match="dense_motion_network.* NaN/inf"):
        load_checkpoint(st)


def test_random_bytes_are_not_called_a_pickle_that_runs_code(tmp_path):
    from splinecam.engines.tpsmm.checkpoint import load_checkpoint

    rng = np.random.default_rng(0)
    for i in range(5):
        p = tmp_path / f"r{i}.pth.tar"
        p.write_bytes(rng.integers(0, 256, 4096, dtype=np.uint8).tobytes())
        with pytest.raises(CheckpointError) as e:
            load_checkpoint(p, GOLDEN / "config.yaml")
        assert "run code" not in str(e.value) and "not a readable checkpoint" in str(e.value)


def _config(**patch):
    import copy

    base = {"name": "t", "image_size": 64, "model_params": {
        "common_params": {"num_tps": 10, "num_channels": 3, "bg": True, "multi_mask": True},
        "generator_params": {"block_expansion": 8, "max_features": 16, "num_down_blocks": 3},
        "dense_motion_params": {"block_expansion": 8, "max_features": 16, "num_blocks": 3, "scale_factor": 0.25},
        "avd_network_params": {"id_bottle_size": 16, "pose_bottle_size": 16},
        "kp_detector_params": {"width": 8, "depth": 1}}}
    d = copy.deepcopy(base)
    for path, value in patch.items():
        node = d
        parts = path.split(".")
        for p in parts[:-1]:
            node = node[p]
        node[parts[-1]] = value
    return d


@pytest.mark.parametrize("path,value", [
    ("model_params", [1, 2]), ("model_params.common_params", ["num_tps", 10]), ("model_params.common_params.num_tps", "abc"),
    ("image_size", "abc"), ("model_params.generator_params.block_expansion", -8),
    ("model_params.dense_motion_params.max_features", -1), ("model_params.kp_detector_params.width", 0),
    ("model_params.common_params.num_tps", float("nan")), ("model_params.common_params.bg", "false"),
    ("model_params.dense_motion_params.scale_factor", 0.3), ("model_params.dense_motion_params.scale_factor", float("inf")),
    ("image_size", 80), ("image_size", 10**12), ("model_params.generator_params", "wide"),
    ("dataset_params", [1]), ("train_params", "fast"), ("model_params.common_params.num_tps", True),
], ids=lambda v: str(v)[:30])
def test_bad_config_values_are_one_config_error(path, value):
    from splinecam.engines.tpsmm.config import config_from_dict

    with pytest.raises(ConfigError):
        config_from_dict(_config(**{path: value}), "t")
    assert config_from_dict(_config(), "t").image_size == 64


def test_bad_config_yaml_file_is_one_line(tmp_path, capsys):
    y = tmp_path / "c.yaml"
    y.write_text("model_params:\n  common_params: [1, 2]\n")
    one_error(capsys, main(["animate", "--source", str(AVATAR), "--driving", str(CLIP), "--out", str(tmp_path / "o.mp4"),
                            "--checkpoint", str(GOLDEN / "checkpoint.pth.tar"), "--config", str(y)]), "common_params")


def test_image_size_that_the_networks_cannot_run_is_one_line(tmp_path, capsys):
    from splinecam.engines.tpsmm.config import check_image_size, load_config

    lite = load_config("lite-256")
    for size in (64, 96, 192):
        with pytest.raises(ConfigError, match="multiple of 128"):
            check_image_size(lite, size, "--image-size")
    assert check_image_size(lite, 128, "--image-size") == 128
    one_error(capsys, main(["train", "--config", "lite-256", "--data", str(tmp_path), "--out", str(tmp_path / "run"),
                            "--image-size", "64"]), "--image-size 64", "multiple of 128")


def _safetensors_with(tmp_path, **metadata):
    from safetensors.torch import save_file

    from splinecam.engines.tpsmm.checkpoint import load_checkpoint

    good = load_checkpoint(GOLDEN / "checkpoint.pth.tar", GOLDEN / "config.yaml")
    flat = {f"{n}.{k}": v.contiguous() for n, m in good.model.submodules().items() for k, v in m.state_dict().items()}
    path = tmp_path / "w.safetensors"
    save_file(flat, str(path), metadata={"format": "splinecam", **metadata})
    return path


def test_safetensors_metadata_faults(tmp_path):
    import yaml

    from splinecam.engines.tpsmm.checkpoint import load_checkpoint

    cfg = yaml.safe_load((GOLDEN / "config.yaml").read_text())
    with pytest.raises(CheckpointError, match="not readable YAML"):
        load_checkpoint(_safetensors_with(tmp_path, config="model_params: [unclosed"))
    with pytest.raises(CheckpointError, match="stored config is invalid"):
        load_checkpoint(_safetensors_with(tmp_path, config=yaml.safe_dump({**cfg, "model_params": [1, 2]})))
    with pytest.warns(UserWarning, match="training_json"):
        loaded = load_checkpoint(_safetensors_with(tmp_path, config=yaml.safe_dump(cfg), training_json="{not json"))
    assert "training" not in loaded.metadata
    with pytest.warns(UserWarning, match="landmark_indices"):
        loaded = load_checkpoint(_safetensors_with(tmp_path, config=yaml.safe_dump(cfg),
                                                   training_json=json.dumps({"landmark_indices": ["x", -4]})))
    assert loaded.metadata["training"]["landmark_indices"] is None


def _prepared(tmp_path, n=3):
    root = tmp_path / "data"
    root.mkdir()
    clips = []
    for i in range(2):
        np.save(root / f"c{i}.npy", np.zeros((n, 64, 64, 3), np.uint8))
        clips.append({"name": f"c{i}", "video": "v.mp4", "path": f"c{i}.npy", "landmarks_path": None})
    (root / "manifest.json").write_text(json.dumps({"size": 64, "clips": clips}))
    return root


@pytest.mark.parametrize("fault", ["manifest-not-json", "manifest-a-list", "clip-entry-broken", "npy-missing",
                                   "npy-truncated", "npy-not-frames"])
def test_bad_training_data_is_one_data_error(tmp_path, fault, capsys):
    from splinecam.training.data import DataError, load_clips

    root = _prepared(tmp_path)
    assert len(load_clips(root)) == 2
    if fault == "manifest-not-json":
        (root / "manifest.json").write_text("{oops")
    elif fault == "manifest-a-list":
        (root / "manifest.json").write_text("[1, 2]")
    elif fault == "clip-entry-broken":
        (root / "manifest.json").write_text(json.dumps({"clips": [{"name": 3}]}))
    elif fault == "npy-missing":
        (root / "c1.npy").unlink()
    elif fault == "npy-truncated":
        data = (root / "c1.npy").read_bytes()
        (root / "c1.npy").write_bytes(data[: len(data) // 2])
    elif fault == "npy-not-frames":
        np.save(root / "c1.npy", np.zeros((3, 5)))
    with pytest.raises(DataError):
        load_clips(root)
    one_error(capsys, main(["evaluate", "--data", str(root), *GOLDEN_ARGS[:4]]), str(root))
    one_error(capsys, main(["train", "--config", str(GOLDEN / "config.yaml"), "--data", str(root),
                            "--out", str(tmp_path / "run")]), str(root))


# ============================================================================ verified caches (probe 3)


class _Builds:
    """A fake artefact builder: three files, counts its builds."""

    def __init__(self):
        self.count = 0

    def __call__(self, folder: Path):
        self.count += 1
        (folder / "generator.onnx").write_bytes(bytes(range(256)) * 40)
        (folder / "keypoints.onnx").write_bytes(b"k" * 1000)
        (folder / "manifest.json").write_text('{"graphs": ["generator", "keypoints"]}')


@pytest.mark.parametrize("damage,status", [
    ("truncate", "corrupt"), ("delete", "corrupt"), ("overwrite-same-size", "corrupt"), ("unseal", "corrupt"),
    ("seal-garbage", "corrupt"), ("manifest-edited", "corrupt"), ("everything-gone", "missing"),
])
def test_cache_entry_is_verified_and_rebuilt(tmp_path, damage, status):
    from splinecam.engines.cache_store import SEAL_NAME, CacheDir, EntryStatus

    entry = CacheDir(tmp_path / "onnx" / "abc", key={"model_hash": "ab", "precision": "fp32"}, what="ONNX export")
    build, said = _Builds(), []
    assert entry.ensure(build, said.append) == entry.directory and build.count == 1
    assert entry.check()[0] is EntryStatus.VALID
    assert entry.ensure(build, said.append) == entry.directory and build.count == 1   # reused, not rebuilt
    gen = entry.directory / "generator.onnx"
    if damage == "truncate":
        gen.write_bytes(gen.read_bytes()[:100])
    elif damage == "delete":
        gen.unlink()
    elif damage == "overwrite-same-size":
        data = bytearray(gen.read_bytes())
        data[5000] ^= 0xFF                                          # one weight, in place
        gen.write_bytes(bytes(data))
    elif damage == "unseal":
        (entry.directory / SEAL_NAME).unlink()
    elif damage == "seal-garbage":
        (entry.directory / SEAL_NAME).write_text("{not json")
    elif damage == "manifest-edited":
        (entry.directory / "manifest.json").write_text('{"graphs": ["keypoints"]}')   # the generator entry removed
    elif damage == "everything-gone":
        shutil.rmtree(entry.directory)
    assert entry.check()[0].value == status
    said.clear()
    assert entry.ensure(build, said.append) == entry.directory and build.count == 2
    assert len(said) == 1 and ("rebuilding" in said[0] or "building" in said[0])
    assert entry.check()[0] is EntryStatus.VALID
    assert not [p for p in entry.directory.parent.iterdir() if p.name.startswith(".")]   # no build leftovers


def test_cache_entry_stale_key_and_failed_build(tmp_path):
    from splinecam.engines.cache_store import CacheDir, EntryStatus

    d = tmp_path / "onnx" / "e"
    CacheDir(d, {"model_hash": "ab"}).ensure(_Builds(), lambda _: None)
    other = CacheDir(d, {"model_hash": "cd"})
    status, reason = other.check()
    assert status is EntryStatus.STALE and "model_hash" in reason

    def broken(folder):
        (folder / "half.onnx").write_bytes(b"x")
        raise KeyboardInterrupt                                      # interrupted mid-build

    with pytest.raises(KeyboardInterrupt):
        other.ensure(broken, lambda _: None)
    assert CacheDir(d, {"model_hash": "ab"}).check()[0] is EntryStatus.VALID   # the old entry untouched
    assert not [p for p in d.parent.iterdir() if p.name.startswith(".")]


def test_unwritable_cache_falls_back_to_a_temporary_one(readonly_dir, tmp_path, monkeypatch):
    import tempfile

    from splinecam.engines import cache_store
    from splinecam.engines.cache_store import CacheDir, EntryStatus

    monkeypatch.setattr(tempfile, "tempdir", str(tmp_path / "tmp"))
    (tmp_path / "tmp").mkdir()
    monkeypatch.setattr(cache_store, "_warned", set())
    entry = CacheDir(readonly_dir / "onnx" / "e", {"model_hash": "ab"}, "ONNX export")
    said, build = [], _Builds()
    where = entry.ensure(build, said.append)
    assert str(where).startswith(str(tmp_path / "tmp")) and build.count == 1
    assert any("not writable" in s and "SPLINECAM_CACHE" in s for s in said)
    assert entry.ensure(build, said.append) == where and build.count == 1    # reused from the fallback
    assert CacheDir(where, {"model_hash": "ab"}).check()[0] is EntryStatus.VALID


def test_plan_store_falls_back_when_unwritable(readonly_dir, tmp_path, monkeypatch):
    import tempfile

    from splinecam.engines.engine_cache import PlanKey, PlanStatus, lookup_plan, store_plan

    monkeypatch.setattr(tempfile, "tempdir", str(tmp_path / "tmp"))
    (tmp_path / "tmp").mkdir()
    key = PlanKey("generator", "ab" * 32, "fp16", "GPU", "8.9", "10.12.0", "cd" * 32, "tf32=off")
    said = []
    path = store_plan(key, b"plan", readonly_dir / "tensorrt", say=said.append)
    assert str(path).startswith(str(tmp_path / "tmp"))
    status, _, data = lookup_plan(key, readonly_dir / "tensorrt")
    assert status is PlanStatus.VALID and data == b"plan"


@pytest.mark.slow
def test_onnx_cache_damage_is_rebuilt_not_trusted(golden_model, tmp_path, monkeypatch, capsys):
    """Probe 3 end to end: a cached generator.onnx overwritten in place (same size) made every
    ``--backend onnxruntime`` run black; now it is detected and rebuilt, and the frames are right."""
    from splinecam.engines.backends import create_backend
    from splinecam.engines.backends.onnxruntime_runner import ensure_export
    from splinecam.engines.engine_cache import onnx_export_entry
    from splinecam.engines.export.graph_checks import DEFAULT_OPSET

    monkeypatch.setenv("SPLINECAM_CACHE", str(tmp_path / "cache"))
    size = golden_model.config.image_size
    img = (np.random.default_rng(0).random((size, size, 3)) * 255).astype(np.uint8)

    def frame():
        b = create_backend(golden_model, "onnxruntime", "cpu", "fp32")
        try:
            s = b.prepare_source(img)
            return b.generate(s, s.kp), b.graphs.export_dir
        finally:
            b.close()

    first, directory = frame()
    entry = onnx_export_entry(golden_model.model_hash, "fp32", DEFAULT_OPSET)
    gen = directory / "generator.onnx"
    data = bytearray(gen.read_bytes())
    data[len(data) // 2: len(data) // 2 + 4096] = bytes(4096)       # weights zeroed in place, same size
    gen.write_bytes(bytes(data))
    capsys.readouterr()
    second, directory2 = frame()
    assert directory2 == directory and "rebuilding" in capsys.readouterr().out
    np.testing.assert_array_equal(first, second)
    # the other damage the issue found, decided without a rebuild each
    for damage in ("truncate", "delete", "manifest"):
        work = tmp_path / damage
        shutil.copytree(directory, work)
        if damage == "truncate":
            (work / "generator.onnx").write_bytes((work / "generator.onnx").read_bytes()[:1000])
        elif damage == "delete":
            (work / "generator.onnx").unlink()
        else:
            m = json.loads((work / "manifest.json").read_text())
            del m["graphs"]["generator"]
            (work / "manifest.json").write_text(json.dumps(m))
        assert entry.check(work)[0].value == "corrupt"
        with pytest.raises(EngineCacheError):                        # a user's export dir: refused, not rebuilt
            ensure_export(golden_model, "fp32", onnx_dir=work)


# ============================================================================ the output guard (probes 3, 4)


def test_output_guard_unit():
    from splinecam.engines.output_guard import GeneratorOutputError, check_prediction

    lit = np.full((64, 64, 3), 120, np.uint8)
    ok = np.full((1, 3, 64, 64), 0.4, np.float32)
    check_prediction(ok, lit)
    nan = ok.copy()
    nan[0, 1, 5, 5] = np.nan
    with pytest.raises(GeneratorOutputError, match="NaN"):
        check_prediction(nan, lit)
    with pytest.raises(GeneratorOutputError, match="all black"):
        check_prediction(np.zeros_like(ok), lit)
    check_prediction(np.zeros_like(ok), np.zeros((64, 64, 3), np.uint8))   # a black avatar may animate black
    dark_scene = ok.copy()
    dark_scene[..., :32] = 0
    check_prediction(dark_scene, lit)                                     # dark half: still a picture


class _Broken:
    """Graph runner wrapper: ``generate`` returns NaN (or black) from call ``after`` on."""

    def __init__(self, graphs, value, after=0):
        self.graphs, self.value, self.after, self.n = graphs, value, after, 0

    def __getattr__(self, name):
        return getattr(self.graphs, name)

    def generate(self, source, feeds):
        out = np.asarray(self.graphs.generate(source, feeds), np.float32)
        self.n += 1
        return out if self.n <= self.after else np.full_like(out, self.value)


@pytest.mark.parametrize("value", [np.nan, 0.0], ids=["nan", "black"])
def test_live_holds_the_avatar_when_the_output_is_refused(tmp_path, value, caplog):
    from tests.test_live_pipeline import FakeCamera, FakeVirtualCamera, build
    from splinecam.live.passthrough import PassThroughBackend

    backend = PassThroughBackend()
    backend.graphs = _Broken(backend.graphs, value, after=3)
    pipe, _, _ = build(tmp_path, FakeCamera(n=12, live=False, fps=25.0), backend=backend)
    summary = pipe.run()
    sent = FakeVirtualCamera.instances[0].frames
    assert summary.frames["bad_output"] == 12 - 3
    assert sent and all(f.mean() > 20 for f in sent)                       # never a black frame to the call
    errors = [r for r in caplog.records if "holding the avatar" in r.getMessage()]
    assert len(errors) == 1                                                # said once, not per frame


def test_live_cli_fails_when_every_frame_is_refused(tmp_path, capsys, monkeypatch):
    from splinecam.engines.backends import base
    from splinecam.engines.output_guard import GeneratorOutputError

    def black(pred, source_image=None):
        raise GeneratorOutputError("the generator's output is all black although the avatar is not")

    monkeypatch.setattr(base, "check_prediction", black)
    rc = main(["live", "--camera", str(CLIP), "--avatar", str(AVATAR), "--no-preview", "--no-virtual-camera",
               "--max-frames", "2", "--no-remember", *GOLDEN_ARGS])
    err = capsys.readouterr().err
    assert rc == 2 and "every generated frame" in err and "Traceback" not in err


def test_animate_stops_on_a_refused_frame_and_keeps_the_rest(tmp_path, golden_model):
    from splinecam.engines.backends import create_backend
    from splinecam.engines.media import count_frames
    from splinecam.engines.output_guard import GeneratorOutputError
    from splinecam.live.animate import AnimateOptions, animate

    backend = create_backend(golden_model, "torch", "cpu", "fp32")
    real = backend.predict
    calls = {"n": 0}

    def predict(*a, **k):
        calls["n"] += 1
        out = real(*a, **k)
        return out if calls["n"] <= 3 else np.zeros_like(out)

    backend.predict = predict
    out = tmp_path / "o.mp4"
    with pytest.raises(GeneratorOutputError, match="driving frame 3: .*all black.*3 frames before it are kept"):
        animate(backend, AnimateOptions(AVATAR, CLIP, out, crop="none", max_frames=20))
    assert count_frames(out) == 3
