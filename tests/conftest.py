"""Shared fixtures: paths into ../shared (beside the repository) and the golden-small model."""

from __future__ import annotations

import os
from pathlib import Path

import numpy as np
import pytest
import torch

REPO = Path(__file__).resolve().parents[1]
SHARED = Path(os.environ.get("SPLINECAM_SHARED", REPO.parent / "shared"))
REFERENCE = SHARED / "reference"
GOLDEN = REFERENCE / "golden-small"
FOMM_GOLDEN = REFERENCE / "fomm-golden-small"
DATA = SHARED / "data"

torch.set_num_threads(min(2, os.cpu_count() or 1))


@pytest.fixture(autouse=True)
def _sigint_handler_restored(request):
    """Every test leaves the SIGINT handler as it found it: one that does not is named by a warning in the
    run's summary and the handler is put back, so the tests after it are not affected
    (test_live_pipeline.py::test_ctrl_c_ends_cleanly once found another handler installed in a full-suite
    run; a full run with a check around every test (2026-12-01) found no test changing it, so the
    leak is intermittent and this names it when it happens)."""
    import signal
    import warnings

    before = signal.getsignal(signal.SIGINT)
    yield
    after = signal.getsignal(signal.SIGINT)
    if after is not before and before is not None:
        signal.signal(signal.SIGINT, before)
        warnings.warn(f"{request.node.nodeid} left the SIGINT handler {after!r} (was {before!r}); restored",
                      stacklevel=1)


def _need(path: Path) -> Path:
    if not path.exists():
        pytest.fail(f"{path} is missing: the tests need ../shared beside the repository "
                    f"(or SPLINECAM_SHARED pointing at it)")
    return path


@pytest.fixture(scope="session")
def shared() -> Path:
    return _need(SHARED)


@pytest.fixture(scope="session")
def golden_io() -> dict:
    with np.load(_need(GOLDEN / "io.npz")) as f:
        return {k: f[k] for k in f.files}


@pytest.fixture(scope="session")
def golden_model():
    from splinecam.engines.tpsmm.checkpoint import load_checkpoint

    return load_checkpoint(_need(GOLDEN / "checkpoint.pth.tar"), GOLDEN / "config.yaml")


@pytest.fixture(scope="session")
def fomm_golden_io() -> dict:
    with np.load(_need(FOMM_GOLDEN / "io.npz")) as f:
        return {k: f[k] for k in f.files}


@pytest.fixture(scope="session")
def fomm_golden_model():
    from splinecam.engines.tpsmm.checkpoint import load_checkpoint

    return load_checkpoint(_need(FOMM_GOLDEN / "checkpoint.pth.tar"), FOMM_GOLDEN / "config.yaml")


def assert_no_driving_pixel_path(backend, avatar: np.ndarray, driving_crop: np.ndarray, monkeypatch) -> None:
    """A landmark backend's output for ``driving_crop`` equals its output for a frame of other (random,
    seed 1) pixels given the same keypoints — the generator sees the driver only through its keypoints
    (the privacy rule; identity preservation) — and moving the keypoints changes it."""
    state = backend.prepare_source(avatar)
    kp = backend.keypoints(driving_crop)
    first = backend.generate(state, kp)
    other = np.random.default_rng(1).integers(0, 256, driving_crop.shape, dtype=np.uint8)
    monkeypatch.setattr(backend.landmarks, "driving", lambda image: kp.copy())  # same keypoints for it
    assert np.array_equal(backend.generate(state, backend.keypoints(other)), first)
    assert not np.array_equal(backend.generate(state, kp + np.float32(0.05)), first)


def assert_engines_agree(reference, other, avatar: np.ndarray, atol: float, draws: int = 3) -> None:
    """Two backends of one model give the same source keypoints (1e-6) and, for ``draws`` keypoint sets
    jittered around them (σ 0.03, seed 0), predictions within ``atol``."""
    st_r, st_o = reference.prepare_source(avatar), other.prepare_source(avatar)
    np.testing.assert_allclose(st_r.kp, st_o.kp, atol=1e-6)
    rng = np.random.default_rng(0)
    for _ in range(draws):
        kp = st_r.kp + rng.normal(0, 0.03, st_r.kp.shape).astype(np.float32)
        a, b = reference.predict(st_r, kp), other.predict(st_o, kp)
        assert np.abs(a - b).max() <= atol
