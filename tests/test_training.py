"""Training package: prepare-data, losses, train (checkpoint, SIGKILL + resume, 2-process DDP),
train-avd, export-weights, evaluate. Tiny config (64 px, narrow networks) on CPU."""

from __future__ import annotations

import csv
import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest
import torch
import yaml

from tests.conftest import DATA, REPO

TINY = {
    "name": "tiny-64",
    "image_size": 64,
    "dataset_params": {"augmentation_params": {"flip_param": {"horizontal_flip": True, "time_flip": True},
                                               "jitter_param": {"brightness": 0.1, "contrast": 0.1,
                                                                "saturation": 0.1, "hue": 0.1}}},
    "model_params": {
        "common_params": {"num_tps": 10, "num_channels": 3, "bg": True, "multi_mask": True},
        "generator_params": {"block_expansion": 8, "max_features": 16, "num_down_blocks": 3},
        "dense_motion_params": {"block_expansion": 8, "max_features": 16, "num_blocks": 3, "scale_factor": 0.25},
        "avd_network_params": {"id_bottle_size": 16, "pose_bottle_size": 16},
        "kp_detector_params": {"width": 8, "depth": 1},
    },
    "train_params": {
        "num_epochs": 4, "num_repeats": 4, "epoch_milestones": [3], "lr_generator": 2e-4, "batch_size": 4,
        "scales": [1, 0.5, 0.25], "dropout_epoch": 2, "dropout_maxp": 0.3, "dropout_startp": 0.1,
        "dropout_inc_epoch": 1, "bg_start": 1,
        "transform_params": {"sigma_affine": 0.05, "sigma_tps": 0.005, "points_tps": 5},
        "loss_weights": {"perceptual": [10, 10, 10, 10, 10], "equivariance_value": 10, "warp_loss": 10,
                         "bg": 10, "pixel": 10, "landmark": 10},
    },
    "train_avd_params": {"num_epochs": 2, "num_repeats": 50, "batch_size": 16, "epoch_milestones": [1],
                         "lr": 1e-3, "lambda_shift": 1, "random_scale": 0.25},
}

ENV = {**os.environ, "PYTHONPATH": str(REPO), "OMP_NUM_THREADS": "1"}
COMMON = ["--threads", "1", "--perceptual-width", "0.125", "--log-every", "1", "--vis-every", "2"]


@pytest.fixture(scope="session")
def tiny_config(tmp_path_factory) -> Path:
    path = tmp_path_factory.mktemp("cfg") / "tiny-64.yaml"
    path.write_text(yaml.safe_dump(TINY))
    return path


@pytest.fixture(scope="session")
def videos(tmp_path_factory) -> Path:
    """Two short face videos (from the sample driving clip) and one without a face."""
    from splinecam.engines.media import VideoReader, VideoWriter

    out = tmp_path_factory.mktemp("videos")
    frames = VideoReader(DATA / "samples" / "driving.mp4").read_all(40)
    for name, part in (("a.mp4", frames[:20]), ("b.mp4", frames[20:40])):
        with VideoWriter(out / name, 25, (part[0].shape[1], part[0].shape[0])) as w:
            for f in part:
                w.write(f)
    ramp = np.linspace(0, 255, 128, dtype=np.float32)
    with VideoWriter(out / "noface.mp4", 25, (128, 128)) as w:
        for k in range(12):
            img = np.stack([np.add.outer(ramp, ramp) / 2, np.tile(ramp, (128, 1)), np.full((128, 128), 20.0 * k)], -1)
            w.write(img.astype(np.uint8))
    return out


@pytest.fixture(scope="session")
def prepared(videos, tmp_path_factory) -> Path:
    from splinecam.cli import main

    out = tmp_path_factory.mktemp("prepared")
    assert main(["prepare-data", "--videos", str(videos), "--out", str(out), "--size", "64"]) == 0
    return out


def run_cli(*args, timeout=120):
    return subprocess.run([sys.executable, "-m", "splinecam", *args], cwd=REPO, env=ENV, capture_output=True,
                          text=True, timeout=timeout)


def read_steps(run: Path) -> list[int]:
    with (run / "losses.csv").open() as f:
        return [int(r["step"]) for r in csv.DictReader(f)]


def test_prepare_data_crops_faces_and_skips_faceless(prepared):
    manifest = json.loads((prepared / "manifest.json").read_text())
    names = {c["video"] for c in manifest["clips"]}
    assert names == {"a.mp4", "b.mp4"}
    assert any("noface" in s["what"] for s in manifest["skipped"])
    clip = np.load(prepared / manifest["clips"][0]["path"])
    assert clip.dtype == np.uint8 and clip.shape[1:] == (64, 64, 3) and len(clip) == 20
    lm = np.load(prepared / manifest["clips"][0]["landmarks_path"])
    assert lm.shape == (20, 468, 2) and np.isfinite(lm).mean() > 0.5


def test_losses_finite_and_decrease(tiny_config, prepared):
    from splinecam.engines.tpsmm.config import load_config
    from splinecam.engines.tpsmm.geometry import RandomTPS
    from splinecam.engines.tpsmm.networks import TPSMM
    from splinecam.training.data import Augmentation, PairDataset, load_clips
    from splinecam.training.options import TrainOptions, TrainSchedule
    from splinecam.training.step import FullModel
    from splinecam.training.vgg import build_perceptual_net

    torch.manual_seed(0)
    cfg = load_config(tiny_config)
    schedule = TrainSchedule.from_config(cfg, TrainOptions(data="", out=""))
    model = TPSMM(cfg)
    full = FullModel(model, schedule, build_perceptual_net(None, 0.125), False, torch.arange(50))
    ds = PairDataset(load_clips(prepared), 64, 2, Augmentation.none())
    batch = torch.utils.data.default_collate([ds[i] for i in range(4)])
    opt = torch.optim.Adam([p for p in full.parameters() if p.requires_grad], lr=1e-3)
    totals = []
    for _ in range(6):
        tps = RandomTPS.sample(4, 0.05, 0.005, 5, generator=torch.Generator().manual_seed(1))
        losses, _ = full(batch, 2, tps)  # epoch 2: bg on, dropout off
        assert set(losses) >= {"perceptual", "pixel", "equivariance_value", "warp_loss", "bg", "landmark"}
        assert all(torch.isfinite(v) for v in losses.values())
        total = sum(losses.values())
        opt.zero_grad()
        total.backward()
        opt.step()
        totals.append(float(total.detach()))
    assert totals[-1] < totals[0]


def test_train_writes_checkpoint_logs_and_exports(tiny_config, prepared, tmp_path):
    from splinecam.engines.tpsmm.checkpoint import load_checkpoint
    from splinecam.cli import main

    run = tmp_path / "run"
    assert main(["train", "--config", str(tiny_config), "--data", str(prepared), "--out", str(run),
                 "--max-steps", "3", "--warmstart-steps", "2", "--landmark-augment", *COMMON]) == 0
    ckpt = torch.load(run / "checkpoint.pth", weights_only=True)
    assert ckpt["step"] == 3 and "optimizer" in ckpt and "rng" in ckpt and "scheduler" in ckpt
    assert "random-fixed-vgg19" in ckpt["meta"]["perceptual"]
    assert read_steps(run) == [1, 2, 3]
    assert (run / "learning_curve.png").is_file() and list((run / "vis").glob("step-*.png"))
    assert "perceptual loss network: random-fixed-vgg19" in (run / "log.txt").read_text()
    # a second train into the same run dir without --resume is refused with one line
    assert main(["train", "--config", str(tiny_config), "--data", str(prepared), "--out", str(run),
                 "--max-steps", "3", *COMMON]) == 2
    # export → loads without --config
    out = tmp_path / "w.safetensors"
    assert main(["export-weights", "--run", str(run), "--out", str(out)]) == 0
    loaded = load_checkpoint(out)
    assert loaded.config.name == "tiny-64" and loaded.metadata["training"]["steps"] == 3


def test_sigkill_then_resume_loses_nothing(tiny_config, prepared, tmp_path):
    args = ["train", "--config", str(tiny_config), "--data", str(prepared), "--max-steps", "8",
            "--checkpoint-steps", "2", *COMMON]
    # reference: uninterrupted
    ref = tmp_path / "ref"
    r = run_cli(*args, "--out", str(ref))
    assert r.returncode == 0, r.stderr[-2000:]
    # killed after its first checkpoint
    run = tmp_path / "run"
    proc = subprocess.Popen([sys.executable, "-m", "splinecam", *args, "--out", str(run)], cwd=REPO, env=ENV,
                            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    deadline = time.time() + 90
    while not (run / "checkpoint.pth").exists() and time.time() < deadline and proc.poll() is None:
        time.sleep(0.05)
    proc.send_signal(signal.SIGKILL)
    proc.wait()
    data = torch.load(run / "checkpoint.pth", weights_only=True)
    killed_at = data["step"]
    assert 2 <= killed_at < 8
    r = run_cli(*args, "--out", str(run), "--resume")
    assert r.returncode == 0, r.stderr[-2000:]
    assert "resumed from" in (run / "log.txt").read_text()
    assert read_steps(run) == list(range(1, 9))  # each step logged exactly once
    a = torch.load(run / "checkpoint.pth", weights_only=True)
    b = torch.load(ref / "checkpoint.pth", weights_only=True)
    assert a["step"] == b["step"] == 8
    for name, sd in b["models"].items():
        for k, v in sd.items():
            torch.testing.assert_close(a["models"][name][k], v, rtol=1e-4, atol=1e-5, msg=f"{name}.{k}")
    assert not list(run.glob("*.tmp*"))


def test_ddp_two_processes_write_one_checkpoint(tiny_config, prepared, tmp_path):
    run = tmp_path / "ddp"
    cmd = [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node", "2",
           "-m", "splinecam", "train", "--config", str(tiny_config), "--data", str(prepared), "--out", str(run),
           "--max-steps", "2", *COMMON]
    r = subprocess.run(cmd, cwd=REPO, env=ENV, capture_output=True, text=True, timeout=150)
    assert r.returncode == 0, (r.stdout + r.stderr)[-3000:]
    assert sorted(p.name for p in run.glob("checkpoint*")) == ["checkpoint.pth"]
    data = torch.load(run / "checkpoint.pth", weights_only=True)
    assert data["step"] == 2 and data["meta"]["world_size"] == 2
    assert read_steps(run) == [1, 2]


def test_avd_export_and_evaluate(tiny_config, prepared, tmp_path):
    from splinecam.engines.tpsmm.checkpoint import load_checkpoint
    from splinecam.cli import main

    run = tmp_path / "run"
    assert main(["train", "--config", str(tiny_config), "--data", str(prepared), "--out", str(run),
                 "--max-steps", "1", *COMMON]) == 0
    assert main(["train-avd", "--checkpoint", str(run), "--data", str(prepared), "--out", str(tmp_path / "avd"),
                 "--max-steps", "5", "--threads", "1"]) == 0
    out = tmp_path / "w.safetensors"
    assert main(["export-weights", "--run", str(run), "--avd", str(tmp_path / "avd"), "--out", str(out)]) == 0
    loaded = load_checkpoint(out)
    assert loaded.has_avd and loaded.metadata["training"]["avd_steps"] == 5
    js = tmp_path / "eval.json"
    assert main(["evaluate", "--checkpoint", str(out), "--data", str(prepared), "--max-frames", "4",
                 "--json", str(js)]) == 0
    res = json.loads(js.read_text())
    assert len(res["videos"]) == 2
    for key in ("l1", "l1_no_motion", "psnr", "psnr_no_motion", "akd", "akd_no_motion"):
        assert key in res["mean"]
    assert res["mean"]["l1_no_motion"] > 0 and np.isfinite(res["mean"]["psnr"])


def test_random_scale_is_anisotropic():
    from splinecam.training.losses import random_scale

    kp = torch.rand(64, 50, 2) * 2 - 1
    out = random_scale(kp, 0.25, generator=torch.Generator().manual_seed(0))
    ratio = out / kp
    sx, sy = ratio[..., 0].median(dim=1).values, ratio[..., 1].median(dim=1).values
    assert ((sx > 0.75 - 1e-4) & (sx < 1.25 + 1e-4)).all() and not torch.allclose(sx, sy)


def test_vgg_loads_torchvision_layout(tmp_path):
    from splinecam.training.vgg import VGG19Features, build_perceptual_net

    net = VGG19Features(1.0)
    sd = {f"features.{k}": v for k, v in net.features.state_dict().items()}
    sd["classifier.0.weight"] = torch.zeros(2, 2)
    torch.save(sd, tmp_path / "vgg19-dcbb9e9d.pth")
    pn = build_perceptual_net(tmp_path / "vgg19-dcbb9e9d.pth")
    assert pn.kind.startswith("imagenet-vgg19")
    feats = pn(torch.rand(1, 3, 32, 32))
    assert [f.shape[1] for f in feats] == [64, 128, 256, 512, 512]


def test_lite_256_is_at_most_a_fifth_of_vox_256():
    from splinecam.engines.tpsmm.flops import count_network_flops

    lite = count_network_flops("lite-256", image_size=128)
    vox = count_network_flops("vox-256", image_size=128)
    assert lite.training_frame * 5 <= vox.training_frame


def test_resume_can_shorten_the_lr_schedule():
    from splinecam.training.step import reschedule

    opt = torch.optim.Adam(torch.nn.Linear(2, 2).parameters(), lr=2e-4)
    sched = torch.optim.lr_scheduler.MultiStepLR(opt, [32, 40], gamma=0.1)
    for _ in range(10):
        opt.step()
        sched.step()
    reschedule([sched], [11, 20], 10, 2e-4)
    assert opt.param_groups[0]["lr"] == pytest.approx(2e-4)
    opt.step()
    sched.step()
    assert opt.param_groups[0]["lr"] == pytest.approx(2e-5)


def test_augmented_landmarks_follow_the_image():
    """Bright pixels at two landmarks land where the augmented targets say, flips included (a flipped
    landmark is re-indexed by the mirror map), for several random draws."""
    import numpy as np

    from splinecam.training.keypoints import LandmarkAugmentation, augment

    size = 129
    lms = torch.full((6, 468, 2), float("nan"))
    lms[:, 0] = torch.tensor([0.25, -0.5])   # landmark 0 …
    lms[:, 1] = torch.tensor([-0.25, -0.5])  # … and its mirror twin 1
    mirror = torch.arange(468)
    mirror[0], mirror[1] = 1, 0
    img = torch.zeros(6, 3, size, size)
    for k, ch in ((0, 0), (1, 1)):  # landmark 0 lit in red, 1 in green
        x, y = ((lms[0, k] + 1) / 2 * (size - 1)).round().long().tolist()
        img[:, ch, y - 1:y + 2, x - 1:x + 2] = 1
    plain = LandmarkAugmentation(contrast=(1, 1), saturation=(1, 1), brightness=0, channel_gain=0, blur_p=0,
                                 cutout_p=0, noise=0)
    out, moved = augment(img, lms, mirror, np.random.default_rng(5), plain)
    assert torch.isnan(moved[:, 2:]).all()  # unknown stays unknown
    flipped = 0
    for i in range(6):
        for k, ch in ((0, 0), (1, 1)):
            target = moved[i, k]
            # after a flip the red blob (landmark 0) sits where landmark 1 now is
            x, y = ((target + 1) / 2 * (size - 1)).round().long().tolist()
            red, green = out[i, 0, y, x].item(), out[i, 1, y, x].item()
            assert max(red, green) > 0.3, (i, k)
            flipped += red > green if k == 1 else 0
    assert 0 < flipped < 6  # the seed draws both flipped and plain samples




def test_init_onto_a_new_keypoint_head_then_freeze_it(tiny_config, prepared, tmp_path):
    """--init from a run with the official fc head onto a heatmap-head config loads the backbone and
    logs the fresh head; a warm start trains the keypoint detector; with --freeze-keypoints the main
    loop then leaves it (weights and BatchNorm statistics) untouched and trains the rest."""
    import copy

    from splinecam.cli import main

    base = tmp_path / "fc"
    assert main(["train", "--config", str(tiny_config), "--data", str(prepared), "--out", str(base),
                 "--max-steps", "1", *COMMON]) == 0
    heat_cfg = copy.deepcopy(TINY)
    heat_cfg["name"] = "tiny-64-heatmap"
    heat_cfg["model_params"]["kp_detector_params"]["head"] = "heatmap"
    cfg_path = tmp_path / "tiny-64-heatmap.yaml"
    cfg_path.write_text(yaml.safe_dump(heat_cfg))

    def models(run):
        return torch.load(run / "checkpoint.pth", weights_only=True)["models"]

    warm = tmp_path / "warm"
    assert main(["train", "--config", str(cfg_path), "--data", str(prepared), "--out", str(warm), "--init",
                 str(base / "checkpoint.pth"), "--warmstart-steps", "2", "--landmark-augment", "--max-steps", "0",
                 *COMMON]) == 0
    assert "kp_detector initialised except heatmap_head" in (warm / "log.txt").read_text()
    before, init = models(warm), models(base)
    assert torch.equal(before["dense_motion_network"]["hourglass.encoder.down_blocks.0.conv.weight"],
                       init["dense_motion_network"]["hourglass.encoder.down_blocks.0.conv.weight"])
    assert not torch.equal(before["kp_detector"]["fg_encoder.conv1.weight"], init["kp_detector"]["fg_encoder.conv1.weight"])

    frozen = tmp_path / "frozen"
    assert main(["train", "--config", str(cfg_path), "--data", str(prepared), "--out", str(frozen), "--init",
                 str(warm / "checkpoint.pth"), "--freeze-keypoints", "--max-steps", "2", *COMMON]) == 0
    after = models(frozen)
    for key, value in before["kp_detector"].items():
        assert torch.equal(value, after["kp_detector"][key]), key
    assert any(not torch.equal(v, after["dense_motion_network"][k]) for k, v in before["dense_motion_network"].items())


def test_landmark_training_without_landmarks_is_one_line(tiny_config, prepared, tmp_path, capsys):
    """Data prepared without landmarks + a warm start: one line naming the fix, exit 2, no traceback."""
    import json
    import shutil

    from splinecam.cli import main

    data = tmp_path / "nolm"
    shutil.copytree(prepared, data)
    manifest = json.loads((data / "manifest.json").read_text())
    for clip in manifest["clips"]:
        clip.pop("landmarks_path", None)
    (data / "manifest.json").write_text(json.dumps(manifest))
    assert main(["train", "--config", str(tiny_config), "--data", str(data), "--out", str(tmp_path / "run"),
                 "--warmstart-steps", "1", "--max-steps", "0", *COMMON]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "--no-landmarks" in err[0] and "Traceback" not in err[0]


def test_init_with_mismatched_shapes_is_one_line(tiny_config, prepared, tmp_path, capsys):
    import copy

    from splinecam.cli import main

    base = tmp_path / "base"
    assert main(["train", "--config", str(tiny_config), "--data", str(prepared), "--out", str(base),
                 "--max-steps", "1", *COMMON]) == 0
    wider = copy.deepcopy(TINY)
    wider["model_params"]["dense_motion_params"]["block_expansion"] = 16
    cfg = tmp_path / "wider.yaml"
    cfg.write_text(yaml.safe_dump(wider))
    capsys.readouterr()
    assert main(["train", "--config", str(cfg), "--data", str(prepared), "--out", str(tmp_path / "run"),
                 "--init", str(base / "checkpoint.pth"), "--max-steps", "1", *COMMON]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "dense_motion_network." in err[0] and "pass the --config it was trained with" in err[0]


def _old_format_checkpoint(cfg_path: Path, *, step: int, epoch: int, step_in_epoch: int, minimal: bool = False) -> dict:
    """A checkpoint dict exactly as ``train`` wrote it before the checkpoint became a dataclass
    (training/trainer.py ``payload()`` up to commit a6df8cf: every key by hand, RNG as tensors + a repr,
    the options as ``asdict(TrainOptions)`` of that version). ``minimal``: only what a reader of any
    version needs to resume (no warm-start / background states, no landmark indices, no meta)."""
    import random
    import warnings

    from splinecam.engines.tpsmm.config import load_config
    from splinecam.engines.tpsmm.networks import TPSMM

    cfg = load_config(cfg_path)
    torch.manual_seed(0)
    model = TPSMM(cfg)
    model.avd_network = None
    kp = list(model.kp_detector.parameters())
    opt = torch.optim.Adam([*kp, *model.dense_motion_network.parameters(), *model.inpainting_network.parameters()],
                           lr=2e-4, betas=(0.5, 0.999), weight_decay=1e-4)
    opt_bg = torch.optim.Adam(model.bg_predictor.parameters(), lr=2e-4, betas=(0.5, 0.999), weight_decay=1e-4)
    opt_warm = torch.optim.Adam(kp, lr=1e-3)
    sched = torch.optim.lr_scheduler.MultiStepLR(opt, [3], gamma=0.1)
    sched_bg = torch.optim.lr_scheduler.MultiStepLR(opt_bg, [3], gamma=0.1)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", UserWarning)
        for _ in range(epoch):
            sched.step()
            sched_bg.step()
    np_state = np.random.get_state()
    data = {
        "format": "splinecam-training", "config": yaml.safe_dump(cfg.to_yaml_dict(), sort_keys=False),
        "config_name": cfg.name, "models": {n: m.state_dict() for n, m in model.submodules().items()},
        "optimizer": opt.state_dict(), "scheduler": sched.state_dict(),
        "optimizer_bg": opt_bg.state_dict(), "scheduler_bg": sched_bg.state_dict(),
        "optimizer_warmstart": opt_warm.state_dict(),
        "step": step, "epoch": epoch, "step_in_epoch": step_in_epoch, "warmstart_step": 0,
        "wall_time": 12.5,
        "rng": {"torch": torch.get_rng_state(), "numpy_keys": torch.from_numpy(np_state[1].astype(np.int64)),
                "numpy_pos": int(np_state[2]), "python": repr(random.getstate())},
        "options": {"data": "old/data", "out": "old/run", "resume": False, "init": None, "max_steps": None,
                    "epochs": None, "batch_size": None, "device": "cpu", "threads": 1, "image_size": None,
                    "bf16": False, "vgg_weights": None, "perceptual_width": 0.125, "lr": None,
                    "epoch_milestones": None, "train_param": None, "num_repeats": None, "checkpoint_minutes": 5.0,
                    "checkpoint_steps": None, "log_every": 1, "vis_every": 2, "warmstart_steps": 0,
                    "warmstart_lr": 0.001, "warmstart_batch": 16, "landmark_augment": False,
                    "landmark_weight": None, "freeze_keypoints": False, "pixel_weight": None, "seed": 0},
        "landmark_indices": list(range(0, 100, 2)),
        "meta": {"config_name": cfg.name, "perceptual": "random-fixed-vgg19 (width 0.125)", "image_size": 64,
                 "world_size": 1, "bf16": False, "init": None},
    }
    if minimal:
        for key in ("optimizer_bg", "scheduler_bg", "optimizer_warmstart", "warmstart_step", "landmark_indices",
                    "meta", "options", "format"):
            data.pop(key)
    return data


@pytest.mark.parametrize("minimal", [False, True], ids=["old-format", "old-format-minimal"])
def test_resume_from_a_checkpoint_written_before_the_dataclass(tiny_config, prepared, tmp_path, minimal):
    """--resume of a checkpoint dict in the layout the trainer wrote before training/checkpoint.py: the run
    continues from its step and epoch, for two more steps, and writes the same layout back."""
    from splinecam.cli import main
    from splinecam.training.checkpoint import TrainingCheckpoint

    run = tmp_path / "old"
    run.mkdir()
    old = _old_format_checkpoint(tiny_config, step=2, epoch=1, step_in_epoch=0, minimal=minimal)
    torch.save(old, run / "checkpoint.pth")
    assert main(["train", "--config", str(tiny_config), "--data", str(prepared), "--out", str(run), "--resume",
                 "--max-steps", "4", *COMMON]) == 0
    log = (run / "log.txt").read_text()
    assert "resumed from" in log and "step 2, epoch 1 (+0 steps)" in log
    assert read_steps(run) == [3, 4]
    new = torch.load(run / "checkpoint.pth", weights_only=True)
    assert (new["step"], new["epoch"], new["step_in_epoch"]) == (4, 1, 2) and new["wall_time"] > 12.5
    written = TrainingCheckpoint.from_dict(old).to_dict()
    assert list(new) == list(written)  # the on-disk layout is the old one
    if not minimal:
        assert list(new) == list(old) and new["landmark_indices"] == old["landmark_indices"]
        assert new["meta"]["config_name"] == "tiny-64" and new["meta"]["init"] is None
    for name, sd in old["models"].items():  # trained on from the stored weights
        assert any(not torch.equal(v, new["models"][name][k]) for k, v in sd.items()
                   if v.is_floating_point()), name


def test_training_checkpoint_round_trips_the_old_layout(tiny_config):
    from splinecam.training.checkpoint import TrainingCheckpoint

    old = _old_format_checkpoint(tiny_config, step=7, epoch=3, step_in_epoch=1)
    ckpt = TrainingCheckpoint.from_dict(old)
    assert (ckpt.progress.step, ckpt.progress.epoch, ckpt.progress.step_in_epoch, ckpt.progress.wall) == (7, 3, 1, 12.5)
    back = ckpt.to_dict()
    assert list(back) == list(old)
    assert all(back[k] is old[k] or back[k] == old[k] for k in old if k not in ("models", "rng"))


def test_bf16_autocast_runs_on_the_models_device(tiny_config, monkeypatch):
    """--bf16 autocasts on the device the model is on (it was always autocast("cpu"): nothing on CUDA)."""
    from types import SimpleNamespace

    from splinecam.engines.tpsmm.config import load_config
    from splinecam.engines.tpsmm.networks import TPSMM
    from splinecam.training.options import TrainOptions, TrainSchedule
    from splinecam.training.step import FullModel
    from splinecam.training.vgg import build_perceptual_net

    cfg = load_config(tiny_config)
    schedule = TrainSchedule.from_config(cfg, TrainOptions(data="", out=""))
    full = FullModel(TPSMM(cfg), schedule, build_perceptual_net(None, 0.125), True, None)
    with full.amp():
        assert torch.is_autocast_enabled("cpu") and torch.get_autocast_dtype("cpu") == torch.bfloat16
    seen = []
    monkeypatch.setattr(torch, "autocast", lambda device_type, dtype: seen.append((device_type, dtype)))
    full._buffers["mirror"] = SimpleNamespace(device=SimpleNamespace(type="cuda"))  # as after .to("cuda")
    full.amp()
    assert seen == [("cuda", torch.bfloat16)]
    full.bf16 = False
    with full.amp():
        assert not torch.is_autocast_enabled("cpu")


def test_pair_affine_moves_frames_and_landmarks_together():
    """``affine_param``: both frames of a pair get the same random similarity, and each landmark's
    target still sits on the blob drawn at it (mediapipe pixel convention, through to grid coordinates)."""
    import random

    from splinecam.training.data import Augmentation, Clip, PairDataset, random_similarity, warp_pair

    size = 96
    lm = np.full((2, 468, 2), 48.0, np.float32)
    pts = np.array([[30.5, 36.5], [64.5, 40.5], [48.5, 66.5]], np.float32)  # three lit landmarks
    lm[:, :3] = pts
    frames = np.full((2, size, size, 3), 40, np.uint8)  # a grey background: nothing black to start with
    for x, y in pts:
        frames[:, int(y) - 2:int(y) + 3, int(x) - 2:int(x) + 3] = 255
    frames[1, ..., 2] = 90  # the driving frame differs from the source
    aug = Augmentation(False, False, 0, 0, 0, 0, scale=(0.9, 1.3), rotation=15, shift=0.08)
    assert aug.affine and not Augmentation.none().affine
    ds = PairDataset([Clip("c", "c.mp4", frames, lm)], size, 8, aug, seed=3, require_landmarks=True)
    moved = 0
    for k in range(8):
        item = ds[k]
        for name in ("source", "driving"):
            img = item[name].numpy()[0]
            grid = item[f"{name}_landmarks"].numpy()
            for p in range(3):
                x, y = (grid[p] + 1) / 2 * (size - 1)  # grid (align_corners) → pixel index
                ix, iy = int(round(x)), int(round(y))
                assert img[iy, ix] > 0.6, (k, name, p, x, y)  # the target is on its blob
            moved += not np.allclose(grid[:3], (pts - 0.5) / (size - 1) * 2 - 1, atol=1e-3)
    assert moved >= 12  # the draws do move things
    # one draw moves both frames identically: warp_pair with a fixed matrix
    m = random_similarity(aug, size, random.Random(1))
    (a, b), (la, lb) = warp_pair([frames[0], frames[0]], [lm[0], lm[0]], m)
    assert np.array_equal(a, b) and np.array_equal(la, lb)
    assert a.min() == 40  # outside the frame the border is mirrored, never black padding


def test_pair_affine_config_is_checked():
    from splinecam.training.data import Augmentation, DataError

    params = {"augmentation_params": {"affine_param": {"scale": [1.2, 0.9]}}}
    with pytest.raises(DataError, match="affine_param.scale"):
        Augmentation.from_dataset_params(params)
    aug = Augmentation.from_dataset_params({"augmentation_params": {"affine_param": {"scale": [0.9, 1.3], "rotation": 5}}})
    assert aug.scale == (0.9, 1.3) and aug.rotation == 5 and aug.shift == 0


def test_fold_loss_is_zero_without_a_fold_and_counts_a_reversed_band():
    """losses.fold_loss: an identity, a rotation+zoom and a smooth TPS-like bend do not fold (0); a band of
    columns sampled in reverse order folds over exactly that band; a step of gradient descent unfolds it."""
    import math

    from splinecam.engines.tpsmm.geometry import make_coordinate_grid
    from splinecam.engines.tpsmm.geometry import fold_fraction_and_depth
    from splinecam.training.losses import fold_loss

    grid = make_coordinate_grid(32, 32).unsqueeze(0)                           # (1,32,32,2)
    a = math.radians(20)
    rot = torch.tensor([[math.cos(a), -math.sin(a)], [math.sin(a), math.cos(a)]]) * 1.3
    bent = grid + 0.1 * torch.sin(3 * grid[..., :1]) * torch.tensor([0.0, 1.0])
    for g in (grid, grid @ rot.T, bent):
        frac, depth = fold_fraction_and_depth(g)
        assert frac.item() == 0 and depth.item() == 0 and fold_loss(g).item() == 0
    folded = grid.clone()
    folded[:, :, 8:16, 0] = folded[:, :, 8:16, 0].flip(-1)                      # columns 8–15 reversed
    frac, depth = fold_fraction_and_depth(folded)
    assert frac.item() == pytest.approx(7 / 31, abs=1e-6) and depth.item() > 0.1
    x = folded.clone().requires_grad_(True)
    before = fold_loss(x)
    before.backward()
    with torch.no_grad():
        after = fold_loss(x - 0.01 * x.grad / x.grad.abs().max())
    assert after.item() < before.item()


def test_fold_weight_adds_a_fold_term_to_the_step():
    """train_params.loss_weights.fold > 0 puts a "fold" term in a cpu-256 step's losses (none at 0, the
    default of configs that do not set it), and it carries gradient to the dense motion network."""
    from splinecam.engines.tpsmm.config import load_config
    from splinecam.engines.tpsmm.networks import TPSMM
    from splinecam.training.options import TrainOptions, TrainSchedule
    from splinecam.training.step import FullModel
    from splinecam.training.vgg import build_perceptual_net

    torch.manual_seed(0)
    cfg = load_config("cpu-256")
    schedule = TrainSchedule.from_config(cfg, TrainOptions(data="", out=""))
    assert schedule.loss_weights["fold"] == 30           # the bundled recipe (training/BUNDLED.md, run 3)
    schedule.loss_weights["fold"] = 0
    full = FullModel(TPSMM(cfg), schedule, build_perceptual_net(None, 0.125), False, None)
    g = torch.Generator().manual_seed(0)
    lms = torch.rand(2, 468, 2, generator=g) * 1.2 - 0.6
    batch = {"source": torch.rand(2, 3, 256, 256, generator=g), "driving": torch.rand(2, 3, 256, 256, generator=g),
             "source_landmarks": lms, "driving_landmarks": lms + 0.05 * torch.randn(2, 468, 2, generator=g)}
    assert "fold" not in full(batch, 0, None)[0]
    schedule.loss_weights["fold"] = 2.0
    losses, _ = full(batch, 0, None)
    assert torch.isfinite(losses["fold"]) and losses["fold"].item() > 0    # random landmarks fold the mix
    losses["fold"].backward()
    grads = [p.grad for p in full.dense_motion_network.parameters() if p.grad is not None]
    assert grads and any(g.abs().sum() > 0 for g in grads)


def test_cross_person_fold_term_drives_each_source_by_another_samples_motion():
    """loss_weights.fold_cross > 0 adds a "fold_cross" term: each source driven by the previous sample's relative
    motion (as a call drives an avatar). It is 0 when no sample moves (the grid is the identity's mix), positive
    for random motion, and carries gradient to the dense motion network; absent at weight 0 or batch 1."""
    from splinecam.engines.tpsmm.config import load_config
    from splinecam.engines.tpsmm.networks import TPSMM
    from splinecam.training.options import TrainOptions, TrainSchedule
    from splinecam.training.step import FullModel
    from splinecam.training.vgg import build_perceptual_net

    torch.manual_seed(0)
    cfg = load_config("cpu-256")
    schedule = TrainSchedule.from_config(cfg, TrainOptions(data="", out=""))
    assert schedule.loss_weights["fold_cross"] == 0       # off unless a recipe asks for it
    schedule.loss_weights["fold"] = 0
    full = FullModel(TPSMM(cfg), schedule, build_perceptual_net(None, 0.125), False, None)
    g = torch.Generator().manual_seed(0)
    lms = torch.rand(3, 468, 2, generator=g) * 1.2 - 0.6
    moved = lms + 0.08 * torch.randn(3, 468, 2, generator=g)
    images = {"source": torch.rand(3, 3, 256, 256, generator=g), "driving": torch.rand(3, 3, 256, 256, generator=g)}
    batch = {**images, "source_landmarks": lms, "driving_landmarks": moved}
    assert "fold_cross" not in full(batch, 0, None)[0]
    schedule.loss_weights["fold_cross"] = 5.0
    still = full({**images, "source_landmarks": lms, "driving_landmarks": lms.clone()}, 0, None)[0]
    assert still["fold_cross"].item() == pytest.approx(0, abs=1e-7)
    one = full({k: v[:1] for k, v in batch.items()}, 0, None)[0]
    assert "fold_cross" not in one
    losses, _ = full(batch, 0, None)
    assert torch.isfinite(losses["fold_cross"]) and losses["fold_cross"].item() > 0
    losses["fold_cross"].backward()
    grads = [p.grad for p in full.dense_motion_network.parameters() if p.grad is not None]
    assert grads and any(g.abs().sum() > 0 for g in grads)


def test_resume_rewrites_a_csv_written_before_a_loss_was_added(tmp_path):
    """A run begun under an older header (no ``fold_cross`` column) is resumed: the CSV is rewritten
    under the current header, old values kept by column name, rows after the checkpoint dropped, and
    the next row appended lines up with the header."""
    from splinecam.training.runfiles import STEP_HEADER, RunFiles

    old_header = [h for h in STEP_HEADER if h != "fold_cross"]
    path = tmp_path / "losses.csv"
    with path.open("w", newline="") as f:
        w = csv.writer(f)
        w.writerow(old_header)
        for step in (1, 2, 3):
            w.writerow([step if h == "step" else f"{step}.{i}" for i, h in enumerate(old_header)])
    files = RunFiles(tmp_path)
    files.truncate_after(step=2, epoch=1, warm_step=0)
    files.step_row(3, 0, 1e-4, 9.0, {"pixel": 8.0, "fold_cross": 0.25}, 0.5)
    with path.open(newline="") as f:
        rows = list(csv.DictReader(f))
    assert list(rows[0]) == STEP_HEADER
    assert [r["step"] for r in rows] == ["1", "2", "3"]
    assert rows[1]["pixel"] == f"2.{old_header.index('pixel')}" and rows[1]["fold_cross"] == ""
    assert rows[2]["fold_cross"] == "0.25000" and rows[2]["pixel"] == "8.00000"


def test_train_takes_the_clips_of_every_data_folder(tiny_config, prepared, tmp_path):
    """``--data`` is repeatable (train + validation for a final run): the clips of all folders are used."""
    import shutil

    from splinecam.cli import main

    manifest = json.loads((prepared / "manifest.json").read_text())
    assert len(manifest["clips"]) >= 2
    halves = (manifest["clips"][:1], manifest["clips"][1:])
    folders = []
    for i, clips in enumerate(halves):
        folder = tmp_path / f"part{i}"
        folder.mkdir()
        for c in clips:
            for key in ("path", "landmarks_path"):
                if c.get(key) and (prepared / c[key]).is_file():
                    shutil.copy(prepared / c[key], folder / c[key])
        (folder / "manifest.json").write_text(json.dumps({**manifest, "clips": clips}))
        folders.append(folder)
    run = tmp_path / "run"
    assert main(["train", "--config", str(tiny_config), "--data", str(folders[0]), "--data", str(folders[1]),
                 "--out", str(run), "--max-steps", "1", "--warmstart-steps", "0", *COMMON]) == 0
    assert f"{len(manifest['clips'])} clips" in (run / "log.txt").read_text()


def test_prepare_crop_stays_inside_a_tight_clip():
    """A clip already cropped tight round the face (VoxCeleb / HDTF style): the framing crop (1.85 face sizes)
    would reach past its edges. The default crop is moved / shrunk inside the frame, so every pixel of the
    prepared clip is the video's; ``pad`` keeps the old crop, past the edge with the edge rows replicated."""
    from splinecam.engines.media import VideoReader
    from splinecam.training.prepare import crop_frames

    frames = VideoReader(DATA / "samples" / "driving.mp4").read_all(12)
    h, w = frames[0].shape[:2]
    tight = [np.ascontiguousarray(f[h // 5: h - h // 10, w // 6: w - w // 6]) for f in frames]   # face fills it
    th, tw = tight[0].shape[:2]
    inside, (cx, cy, side) = crop_frames(tight, 64, "tight clip")
    assert side <= min(th, tw) + 1e-6
    assert cx - side / 2 >= -0.5 and cy - side / 2 >= -0.5 and cx + side / 2 <= tw + 0.5 and cy + side / 2 <= th + 0.5
    padded, (pcx, pcy, pside) = crop_frames(tight, 64, "tight clip", mode="pad")
    assert pside > min(th, tw) or pcy - pside / 2 < 0   # the old crop reaches past the frame
    assert inside.shape == padded.shape == (12, 64, 64, 3)
    with pytest.raises(ValueError, match="crop mode"):
        crop_frames(tight, 64, "tight clip", mode="mirror")
