"""splinecam bench: JSON schema, baseline and speed-up bookkeeping, unavailable / failed rows,
the interleaving, the README table and the plot. No timing assertions (speed lives in benchmarks/).

A tiny random 64×64 config keeps the whole file well under a minute on 2 CPU cores.
"""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest

from splinecam.benchmarks.results import SCHEMA

TINY_YAML = """\
name: tiny-64
image_size: 64
model_params:
  common_params: {num_tps: 10, num_channels: 3, bg: true, multi_mask: true}
  generator_params: {block_expansion: 8, max_features: 32, num_down_blocks: 3}
  dense_motion_params: {block_expansion: 8, max_features: 32, num_blocks: 3, scale_factor: 0.25}
  avd_network_params: {id_bottle_size: 16, pose_bottle_size: 16}
  kp_detector_params: {width: 8, depth: 1}
"""


@pytest.fixture(scope="module")
def tiny_config(tmp_path_factory) -> Path:
    path = tmp_path_factory.mktemp("bench") / "tiny-64.yaml"
    path.write_text(TINY_YAML)
    return path


@pytest.fixture(scope="module")
def bench_run(tiny_config, tmp_path_factory):
    """One real `splinecam bench` run: torch fp32/bf16/fp16 + tensorrt (unavailable here)."""
    from splinecam.cli import main

    out = tmp_path_factory.mktemp("bench-out")
    # --no-compile: eager bf16, no minutes-long compile in a unit test
    code = main(["bench", "--config", str(tiny_config), "--backends", "torch,tensorrt", "--no-compile",
                 "--precisions", "fp32,bf16,fp16", "--frames", "2", "--warmup", "1", "--threads", "2",
                 "--json", str(out / "b.json"), "--plot", str(out / "b.png")])
    assert code == 0
    return json.loads((out / "b.json").read_text()), out


def test_json_schema(bench_run):
    data, _ = bench_run
    assert data["schema"] == SCHEMA
    for key in ("device", "model", "inputs", "settings", "conditions", "results", "created", "command"):
        assert key in data
    dev = data["device"]
    for key in ("cpu_model", "cpu_cores_logical", "gpu_name", "compute_capability", "driver_version", "cuda_version",
                "tensorrt_version", "onnxruntime_version", "torch_version"):
        assert key in dev
    model = data["model"]
    assert model["config"] == "tiny-64" and model["image_size"] == 64 and model["num_kp"] == 50
    assert model["parameters"]["total"] > 0
    assert model["gflops_per_frame"] > model["gflops_per_frame_cached"] > 0
    assert data["inputs"]["frames"] == 2 and data["settings"]["warmup"] == 1


def test_one_row_per_backend_and_precision_and_baseline(bench_run):
    data, _ = bench_run
    rows = data["results"]
    baselines = [r for r in rows if r["baseline"]]
    assert len(baselines) == 1 and baselines[0]["precision"] == "fp32" and baselines[0]["status"] == "ok"
    keys = [(r["backend"], r["precision"]) for r in rows]
    assert len(keys) == len(set(keys))
    others = {k for k, r in zip(keys, rows) if not r["baseline"]}
    assert others == {(b, p) for b in ("torch", "tensorrt") for p in ("fp32", "bf16", "fp16")}
    row_keys = {"backend", "precision", "device", "status", "ms_per_frame_median", "ms_per_frame_p90", "fps",
                "stages_ms", "psnr_vs_fp32", "speedup_vs_baseline"}
    for r in rows:
        assert row_keys <= set(r)


def test_psnr_and_speedup_bookkeeping(bench_run):
    data, _ = bench_run
    rows = [r for r in data["results"] if r["status"] == "ok"]
    base = next(r for r in rows if r["baseline"])
    assert len(rows) >= 2
    for r in rows:
        if r["precision"] == "fp32":
            assert r["psnr_vs_fp32"] is None and r["psnr_large_motion_vs_fp32"] is None
        else:
            assert r["psnr_vs_fp32"] is not None and r["psnr_vs_fp32"] > 10
            assert r["psnr_large_motion_vs_fp32"] is not None and r["psnr_large_motion_vs_fp32"] > 10
        assert r["speedup_vs_baseline"] == pytest.approx(base["ms_per_frame_median"] / r["ms_per_frame_median"],
                                                         rel=2e-2)
        assert r["fps"] == pytest.approx(1000.0 / r["ms_per_frame_median"], rel=2e-2)
        assert r["ms_per_frame_p90"] >= r["ms_per_frame_median"] - 1e-6
        assert {"keypoints", "normalise"} <= set(r["stages_ms"])
        assert r["frames"] == 2
    assert base["speedup_vs_baseline"] == 1.0
    assert {"dense_motion", "inpainting"} <= set(base["stages_ms"])
    torch_fp32 = next(r for r in rows if r["backend"] == "torch" and r["precision"] == "fp32")
    assert torch_fp32["max_abs_diff_vs_fp32"] <= 2  # cached fp32 = the official path, to rounding


def test_unavailable_rows_reported_not_crashed(bench_run):
    data, _ = bench_run
    by_key = {(r["backend"], r["precision"]): r for r in data["results"] if not r["baseline"]}
    for p in ("fp32", "bf16", "fp16"):
        row = by_key[("tensorrt", p)]
        assert row["status"] == "unavailable" and row["reason"]
        assert row["ms_per_frame_median"] is None and row["speedup_vs_baseline"] is None
    if data["device"]["gpu_name"] is None:
        assert by_key[("torch", "fp16")]["status"] == "unavailable"


def test_plot_written(bench_run):
    _, out = bench_run
    png = out / "b.png"
    assert png.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n" and png.stat().st_size > 10_000


def test_failed_backend_does_not_stop_the_run(tiny_config, monkeypatch):
    """A backend that breaks while building or while running is a "failed" row; the rest go on."""
    import splinecam.benchmarks.bench as bench
    from splinecam.benchmarks.runner import BackendRunner

    class Broken(BackendRunner):
        def __init__(self, spec, loaded, options=None):
            if spec.precision == "bf16":
                raise RuntimeError("simulated build failure")
            super().__init__(spec, loaded, options)

        def frame(self, driving):
            raise RuntimeError("simulated failure mid-run")

    monkeypatch.setattr(bench, "BackendRunner", Broken)
    result = bench.run_bench(bench.BenchOptions(config=str(tiny_config), backends=["torch"],
                                                precisions=["fp32", "bf16", "fp16"], device="cpu",
                                                frames=1, warmup=0, threads=2))
    rows = {(r.backend, r.precision): r for r in result.results if not r.baseline}
    assert rows[("torch", "bf16")].status == "failed" and "simulated build failure" in rows[("torch", "bf16")].reason
    assert rows[("torch", "fp32")].status == "failed" and "mid-run" in rows[("torch", "fp32")].reason
    assert rows[("torch", "fp32")].speedup_vs_baseline is None
    assert rows[("torch", "fp16")].status == "unavailable"
    assert result.baseline.ok and result.baseline.speedup_vs_baseline == 1.0


def test_measure_interleaves_and_survives_errors():
    from splinecam.benchmarks.runner import RowSpec, Runner, measure

    calls: list[str] = []

    class Fake(Runner):
        def __init__(self, name, fail_at=None):
            self.spec = RowSpec(name, "fp32", "cpu")
            self.fail_at, self.n = fail_at, 0

        def frame(self, driving):
            calls.append(self.spec.backend)
            self.n += 1
            if self.fail_at is not None and self.n >= self.fail_at:
                raise RuntimeError("boom")
            return driving, {"work": 1.0}

    frames = [np.full((4, 4, 3), i, np.uint8) for i in range(3)]
    a, b, c = Fake("a"), Fake("b"), Fake("c", fail_at=3)
    res = measure([a, b, c], frames, warmup=1)
    # warm-up round then 3 timed rounds, each starting one runner later; c fails in round 3 and stops
    assert calls[:3] == ["a", "b", "c"] and calls[3:6] == ["b", "c", "a"] and calls[6:9] == ["c", "a", "b"]
    assert len(res[0].ms) == len(res[1].ms) == 3 and res[2].error == "boom" and len(res[2].ms) == 1
    assert [int(o[0, 0, 0]) for o in res[0].outputs] == [0, 1, 2]
    assert res[0].stage_means() == {"work": 1.0}


def test_default_rows_are_the_existing_combinations():
    from splinecam.benchmarks.bench import row_specs

    keys = {(s.backend, s.precision) for s in row_specs(None, None)}
    assert keys == {("torch", "fp32"), ("torch", "bf16"), ("torch", "fp16"), ("onnxruntime", "fp32"),
                    ("onnxruntime", "fp16"), ("onnxruntime", "int8"), ("openvino", "fp32"), ("openvino", "bf16"),
                    ("openvino", "fp16"), ("openvino", "int8"), ("tensorrt", "fp32"), ("tensorrt", "fp16")}
    assert {(s.backend, s.precision) for s in row_specs(["onnxruntime"], ["bf16", "fp32"])} == \
        {("onnxruntime", "bf16"), ("onnxruntime", "fp32")}  # both lists given: the full cross product
    assert all(s.device == "cuda" for s in row_specs(["tensorrt"], None))


def test_readme_table_from_kept_runs(bench_run, tmp_path):
    from splinecam.benchmarks.report import END, START, format_table, update_readme

    data, out = bench_run
    results = tmp_path / "results"
    results.mkdir()
    (results / "cpu-tiny.json").write_text(json.dumps(data))
    (results / "other.json").write_text(json.dumps({"not": "a bench run"}))
    readme = tmp_path / "README.md"
    readme.write_text(f"# Benchmarks\n\nintro\n\n{START}\nold table\n{END}\n\nafter\n")
    table = update_readme(readme, results)
    text = readme.read_text()
    assert "old table" not in text and "intro" in text and "after" in text
    ok_rows = [r for r in data["results"] if r["status"] == "ok"]
    assert table.count("[cpu-tiny.json](results/cpu-tiny.json) |") == len(ok_rows) and "other.json" not in table
    assert "official demo (baseline)" in table
    printed = format_table(data)
    assert "baseline: official demo" in printed and "unavailable" in printed


def test_synthetic_inputs_are_deterministic(monkeypatch, tmp_path):
    import splinecam.benchmarks.inputs as inputs

    monkeypatch.setattr(inputs, "ASSETS", tmp_path / "none")  # no bundled clip or avatar
    a = inputs.load_inputs(64, 4)
    b = inputs.load_inputs(64, 4)
    assert a.description.startswith("synthetic") and len(a.frames) == 4
    assert a.source.shape == (64, 64, 3) and a.source.dtype == np.uint8
    assert all(np.array_equal(x, y) for x, y in zip(a.frames, b.frames))
    assert not np.array_equal(a.frames[0], a.frames[2])  # it moves


def test_flop_counter_totals():
    from splinecam.engines.tpsmm.flops import count_network_flops

    f = count_network_flops(_tiny_cfg())
    assert f.official_frame == pytest.approx(f.kp_detector + f.dense_motion + f.inpainting_encoder + f.inpainting_decoder)
    assert f.cached_frame == pytest.approx(f.official_frame - f.inpainting_encoder)
    assert f.training_frame == pytest.approx(f.official_frame + f.kp_detector + f.bg_predictor)
    assert min(f.kp_detector, f.bg_predictor, f.dense_motion, f.inpainting_encoder, f.inpainting_decoder) > 0


def test_bad_arguments_are_one_line_errors(capsys):
    from splinecam.cli import main

    with pytest.raises(SystemExit):
        main(["bench", "--backends", "cudnn"])
    assert "comma-separated list" in capsys.readouterr().err
    with pytest.raises(SystemExit) as e:  # refused by the validation layer while parsing (#15)
        main(["bench", "--frames", "0"])
    err = capsys.readouterr().err.strip().splitlines()
    assert e.value.code == 2 and len(err) == 1 and "argument --frames" in err[0]


def _tiny_cfg():
    import yaml

    from splinecam.engines.tpsmm.config import config_from_dict

    return config_from_dict(yaml.safe_load(TINY_YAML), "tiny-64")


def test_pipeline_reports_fps_and_latency(tiny_config):
    """--pipeline: the live pipeline on the bundled webcam clip; TensorRT reported unavailable."""
    from splinecam.benchmarks.pipeline import DEFAULT_AVATAR, run_pipeline
    from splinecam.engines.tpsmm.random_weights import perturbed_random_model

    clip = DEFAULT_AVATAR.parent / "webcam.mp4"
    loaded = perturbed_random_model(str(tiny_config), 0)
    res = run_pipeline(clip, loaded, "torch", "fp32", "cpu", max_frames=4, paced=False, output_size=(320, 240))
    assert res.status == "ok" and res.frames["processed"] >= 4 and res.fps_processed > 0
    assert res.latency_ms["p50"] is not None and res.latency_ms["p95"] >= res.latency_ms["p50"]
    assert {"keypoints", "generate"} <= set(res.stages_ms) and res.output_size == "320x240"
    trt = run_pipeline(clip, loaded, "tensorrt", "fp16", "auto")
    assert trt.status == "unavailable" and trt.reason and trt.fps_processed is None


def test_psnr_floor_and_fastest_row(bench_run):
    """Each reduced-precision row says whether its worst frame keeps the floor (the auto policy's test, as
    the former cpu_speed script did); the run names the fastest row that does."""
    from splinecam.engines.quality import PSNR_FLOOR_DB

    data, _ = bench_run
    rows = [r for r in data["results"] if r["status"] == "ok"]
    for r in rows:
        if r["baseline"]:
            assert r["meets_psnr_floor"] is None
        elif r["precision"] == "fp32":
            assert r["meets_psnr_floor"] is True and r["psnr_min_vs_fp32"] is None
        else:
            assert r["psnr_min_vs_fp32"] <= min(r["psnr_vs_fp32"], r["psnr_large_motion_vs_fp32"]) + 1e-6
            assert r["meets_psnr_floor"] == (r["psnr_min_vs_fp32"] >= PSNR_FLOOR_DB)
    eligible = [r for r in rows if not r["baseline"] and r["meets_psnr_floor"]]
    best = min(eligible, key=lambda r: r["ms_per_frame_median"])
    assert data["fastest"]["row"].startswith(f"{best['backend']} {best['precision']}")
    assert data["fastest"]["psnr_floor_db"] == PSNR_FLOOR_DB
    from splinecam.benchmarks.report import format_table

    assert "fastest at ≥ 35 dB" in format_table(data)


def test_one_psnr():
    """engines/quality.psnr is the PSNR of evaluate, bench and the auto policy: 100 dB for identical
    pictures (uint8 or float), the peak from the dtype, capped at 100."""
    from splinecam.engines.quality import IDENTICAL_PSNR_DB, psnr

    rng = np.random.default_rng(0)
    a = rng.integers(0, 256, (8, 8, 3), dtype=np.uint8)
    assert psnr(a, a) == psnr(a / 255.0, a / 255.0) == IDENTICAL_PSNR_DB == 100.0
    b = a.copy()
    b[0, 0, 0] ^= 16
    want = 10 * np.log10(255.0 ** 2 / (16 ** 2 / a.size))
    assert psnr(a, b) == pytest.approx(want) and psnr(a / 255.0, b / 255.0) == pytest.approx(want)
    assert psnr(np.zeros(3), np.full(3, 1e-9)) == 100.0  # never above the identical value
