"""The bundled default model: its shipped graphs, the light install, and what it must do (issues 12-14).

- the graphs under engines/weights/<name>-graphs are an export of exactly the bundled weights (model
  hash), pass TensorRT's operator checks, and ONNX Runtime runs them as torch runs the weights;
- ``splinecam demo`` runs with PyTorch blocked (the light install) and never imports it;
- no pixel of the driving frame reaches the output: only its keypoints do;
- a still face comes back intact: every portrait in ../shared/data/avatars driven by its own face crop
  gives ≥ 30 dB against that crop;
- the demo output has no black hole (benchmarks/black_regions.py's definition).
"""

from __future__ import annotations

import subprocess
import sys

import pytest

from tests.conftest import REPO, assert_engines_agree, assert_no_driving_pixel_path


@pytest.fixture(scope="module")
def bundled():
    from splinecam.engines.model_options import load_model

    return load_model()


def test_a_still_face_comes_back_intact_for_every_portrait(bundled, shared):
    """Driving = the avatar's own face crop: output vs that crop ≥ 30 dB PSNR, for every bundled-data portrait
    (the TPS systems of cpu-256 reproduce the identity exactly: tests/test_tps_regularise.py)."""
    from splinecam.engines.faces import FaceMesh
    from splinecam.training.evaluate import still_faces

    assert bundled.config.dense_motion.tps_regularise == "kernel"
    with FaceMesh(static=True) as mesh:
        results = still_faces(bundled.model, shared / "data" / "avatars", 256, mesh, progress=lambda s: None)
    assert len(results) >= 10
    worst = min(results, key=lambda r: r.psnr)
    print(f"still faces: worst {worst.psnr:.2f} dB ({worst.name}) of {len(results)}")
    assert worst.psnr >= 30.0, [(r.name, r.psnr) for r in results]


def _crop(path):
    from splinecam.engines.model_options import avatar_sample

    crop = avatar_sample(path, 256)
    assert crop is not None, path
    return crop


def test_shipped_graphs_are_an_export_of_the_bundled_weights(bundled, shared):
    from splinecam.engines.bundled import graphs_dir
    from splinecam.engines.export.graph_checks import inspect_graph
    from splinecam.engines.export.manifest import Manifest
    from splinecam.engines.model_options import default_checkpoint

    directory = graphs_dir(default_checkpoint())
    manifest = Manifest.read(directory)
    assert manifest.model_hash == bundled.model_hash, "re-export the bundled weights: splinecam export " \
        f"--checkpoint {default_checkpoint()} --out {directory}"
    assert manifest.precision == "fp32" and bundled.shipped_export == directory
    allowed = {ln.strip() for ln in (shared / "reference" / "tensorrt10-onnx-ops.txt").read_text().splitlines()
               if ln.strip() and not ln.startswith("#")}
    for name, info in manifest.graphs.items():
        report = inspect_graph(directory / info.file, frozenset(allowed))
        assert report.ok and not report.dynamic, (name, report.problems)


def test_shipped_graphs_run_as_torch_runs_the_weights(bundled):
    from splinecam.engines.backends import create_backend

    torch_b = create_backend(bundled, "torch", "cpu", "fp32")
    ort_b = create_backend(bundled, "onnxruntime", "cpu", "fp32")
    assert ort_b.graphs.export_dir == bundled.shipped_export  # nothing exported: the shipped graphs
    assert_engines_agree(torch_b, ort_b, _crop(REPO / "live" / "assets" / "mona.jpg"), atol=1e-3)


def test_no_pixel_of_the_driving_frame_reaches_the_output(bundled, monkeypatch):
    """Two driving frames with different pixels but the same keypoints give the same output: the
    generator sees the driver only through its keypoints (the privacy rule; identity preservation)."""
    from splinecam.engines.backends import create_backend
    from splinecam.engines.media import VideoReader

    backend = create_backend(bundled, "onnxruntime", "cpu", "fp32")
    frame = next(iter(VideoReader(REPO / "live" / "assets" / "webcam.mp4")))
    assert_no_driving_pixel_path(backend, _crop(REPO / "live" / "assets" / "mona.jpg"), _crop_frame(frame), monkeypatch)


def _crop_frame(frame):
    from splinecam.engines.faces.detection import face_crop

    return face_crop(frame, "the frame")


@pytest.mark.slow
def test_light_install_demo_runs_without_torch_and_has_no_black_hole(tmp_path):
    """``splinecam demo`` with PyTorch blocked (as in `pip install splinecam`, no extras): it runs on the
    shipped graphs, imports no torch, and its video has no black region the avatar does not have."""
    out = tmp_path / "demo.mp4"
    code = ("import sys; sys.modules['torch'] = None\n"
            "from splinecam.cli import main\n"
            f"rc = main(['demo', '--out', {str(out)!r}, '--no-preview'])\n"
            "assert sys.modules.get('torch') is None, 'torch was imported'\n"
            "sys.exit(rc)\n")
    r = subprocess.run([sys.executable, "-c", code], cwd=tmp_path, capture_output=True, text=True, timeout=900,
                       env={**__import__("os").environ, "SPLINECAM_CACHE": str(tmp_path / "cache")})
    assert r.returncode == 0, (r.stdout[-1500:], r.stderr[-1500:])
    from splinecam.benchmarks.black_regions import check_video
    from splinecam.engines.media import read_image

    report = check_video(str(out), read_image(REPO / "live" / "assets" / "mona.jpg"), "pad")
    assert report.frames >= 150 and report.ok, (report.flagged, report.excess)


def test_error_regions_add_up_to_the_clips_l1(bundled):
    """training/error_regions.py (BUNDLED.md's "Where the error is"): the face / ring / rest figures add up
    to the clip's L1 as `evaluate` computes it, their pixel shares to 1, and the warp-refine generator's
    blend mask comes back in [0, 1] for every pixel of every frame."""
    import numpy as np

    from splinecam.engines.faces.mesh import FaceMesh
    from splinecam.engines.media import VideoReader
    from splinecam.training.error_regions import split_clip
    from splinecam.training.evaluate import evaluate_video

    model = bundled.model
    frames = np.stack([_crop_frame(f) for f in VideoReader(REPO / "live" / "assets" / "webcam.mp4").read_all(5)])
    with FaceMesh(static=True) as mesh:
        s = split_clip(model, "webcam", frames, mesh)
        whole = evaluate_video(model, "webcam", frames, mesh)
    assert sum(s.model[k] for k in ("face", "ring", "rest")) == pytest.approx(whole.l1, rel=1e-4)
    assert sum(s.no_motion[k] for k in ("face", "ring", "rest")) == pytest.approx(whole.l1_no_motion, rel=1e-4)
    assert sum(s.share[k] for k in ("face", "ring", "rest")) == pytest.approx(1.0)
    assert s.share["rest_static"] <= s.share["rest"] and s.share["face"] > 0.05
    assert s.masks.shape == (5, 256, 256) and 0 <= s.masks.min() and s.masks.max() <= 1


def test_compiled_torch_path_warms_up_on_the_landmark_model(bundled, monkeypatch):
    """The compiled torch runner warms up a model without a keypoint network on fixed keypoints; all at one
    point made every TPS system singular, and `create_backend(..., 'auto')` fell back to ONNX Runtime with
    "compiling the bf16 CPU path failed (Singular matrix)" for the bundled model. The compile itself is
    replaced by eager execution here (it takes minutes); what is checked is the warm-up's inputs: building the
    runner runs the warm-up, which raised "Singular matrix" before."""
    import splinecam.engines.backends.torch_compiled as tc
    from splinecam.engines.backends.options import BackendOptions

    monkeypatch.setattr(tc, "_compile", lambda module: module)
    runner = tc.CompiledTorchGraphs(bundled, "cpu", "fp32", BackendOptions())
    assert runner.describe() == "torch/cpu/fp32+compiled"


def test_error_regions_bad_data_is_one_line(tmp_path):
    """A --data that is not there: one line on stderr naming it, exit 2, no traceback."""
    missing = tmp_path / "nowhere"
    done = subprocess.run([sys.executable, "-m", "splinecam.training.error_regions", "--data", str(missing)],
                          capture_output=True, text=True, timeout=300)
    assert done.returncode == 2, (done.returncode, done.stderr[-1500:])
    lines = [line for line in done.stderr.splitlines() if line.startswith("error_regions: error:")]
    assert len(lines) == 1 and str(missing) in lines[0] and "Traceback" not in done.stderr, done.stderr[-1500:]
    assert done.stdout == ""
