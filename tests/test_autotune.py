"""``--backend auto`` on a CPU: the measured choice (engines/backends/autotune.py).

Fake backends with known costs and outputs stand in for the engines: the fastest candidate at ≥ 35 dB
against fp32 wins, a faster one below 35 dB is refused, the winner is remembered per machine + model and
re-measured on request or when the remembered file is unreadable.
"""

from __future__ import annotations

from dataclasses import replace

import numpy as np
import pytest

import splinecam.engines.backends as backends
import splinecam.engines.backends.autotune as autotune
from splinecam.engines.backends.options import BackendOptions


class FakeClock:
    """Time advances only when a fake backend generates: the test measures costs, not this machine."""

    def __init__(self):
        self.t = 0.0

    def __call__(self) -> float:
        return self.t


CLOCK = FakeClock()


class FakeBackend:
    def __init__(self, delay_s: float, noise: float):
        self.delay_s, self.noise = delay_s, noise
        self.rng = np.random.default_rng(0)

    def prepare_source(self, image):
        from splinecam.engines.backends.base import SourceState

        return SourceState(image, np.zeros((50, 2), np.float32))

    def generate(self, state, kp):
        CLOCK.t += self.delay_s
        base = np.full((8, 8, 3), 128, np.float32) + 40 * np.float32(kp[0, 0])
        return np.clip(base + self.noise * self.rng.standard_normal(base.shape), 0, 255).astype(np.uint8)

    def close(self):
        pass


@pytest.fixture
def fakes(monkeypatch, tmp_path, golden_model):
    table = {("onnxruntime", "fp32"): (0.012, 0.0), ("openvino", "fp32"): (0.008, 0.0),
             ("openvino", "bf16"): (0.002, 40.0),      # fastest, but ~16 dB: not eligible
             ("onnxruntime", "int8"): (0.006, 1.0)}    # ~47 dB: eligible, the winner
    made = []
    monkeypatch.setattr(autotune, "candidates", lambda: list(table))
    monkeypatch.setattr(autotune, "int8_ready", lambda loaded: True)  # as if its int8 graphs were cached
    monkeypatch.setattr(backends, "create_backend",
                        lambda loaded, e, d, p, o=None: made.append((e, p)) or FakeBackend(*table[(e, p)]))
    monkeypatch.setattr("splinecam.engines.engine_cache.cache_root", lambda: tmp_path)
    return table, made


def test_fastest_at_35db_wins_and_is_remembered(fakes, golden_model):
    table, made = fakes
    sample = np.zeros((256, 256, 3), np.uint8)
    messages = []
    choice = autotune.choose(golden_model, sample, BackendOptions(threads=2), say=messages.append, clock=CLOCK)
    assert (choice.engine, choice.precision) == ("onnxruntime", "int8")
    trials = {(t.engine, t.precision): t for t in choice.trials}
    assert trials[("openvino", "bf16")].psnr_db < 35 <= trials[("onnxruntime", "int8")].psnr_db
    assert trials[("onnxruntime", "fp32")].psnr_db is None  # the reference itself
    line = choice.explain()
    assert line.startswith("auto: onnxruntime int8") and "not eligible: openvino bf16" in line and "\n" not in line
    # remembered: no candidate is built again
    made.clear()
    again = autotune.choose(golden_model, sample, BackendOptions(threads=2), clock=CLOCK)
    assert (again.engine, again.precision) == ("onnxruntime", "int8") and made == []
    # --retune measures again
    autotune.choose(golden_model, sample, BackendOptions(threads=2), retune=True, clock=CLOCK)
    assert len(made) == len(table)


def test_the_key_separates_models_and_thread_counts(fakes, golden_model):
    key = autotune.machine_key(golden_model, 2)
    assert autotune.choice_path(key) != autotune.choice_path(autotune.machine_key(golden_model, 1))
    other = replace(golden_model, model_hash="f" * 64)
    assert autotune.choice_path(key) != autotune.choice_path(autotune.machine_key(other, 2))


def test_unreadable_memory_is_measured_again(fakes, golden_model):
    table, made = fakes
    sample = np.zeros((256, 256, 3), np.uint8)
    key = autotune.machine_key(golden_model, 2)
    path = autotune.choice_path(key)
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text("{not json")
    messages = []
    choice = autotune.choose(golden_model, sample, BackendOptions(threads=2), say=messages.append, clock=CLOCK)
    assert choice.engine == "onnxruntime" and any("unreadable" in m for m in messages)
    assert len(made) == len(table)


def test_a_candidate_that_fails_is_recorded_not_fatal(monkeypatch, fakes, golden_model):
    table, _ = fakes

    def create(loaded, e, d, p, o=None):
        if e == "openvino":
            raise RuntimeError("simulated plugin failure")
        return FakeBackend(*table[(e, p)])

    monkeypatch.setattr(backends, "create_backend", create)
    choice = autotune.measure(golden_model, np.zeros((256, 256, 3), np.uint8), BackendOptions(threads=2), clock=CLOCK)
    assert choice.engine == "onnxruntime"
    assert all("simulated" in t.error for t in choice.trials if t.engine == "openvino")


def test_real_candidates_exclude_compiling_engines():
    got = autotune.candidates()
    assert got and got[0][1] == "fp32"
    assert all(engine != "torch" for engine, _ in got)


def test_a_burst_of_other_work_at_start_does_not_decide(monkeypatch, tmp_path, golden_model):
    """The machine is busy for the first calls (another program starting): every call then costs 5×.
    Timed one candidate after the other, the first one would carry the whole burst and lose; interleaved
    rounds with the best round counted find the truly fastest."""
    calls = {"n": 0}
    busy_calls = 12  # about one candidate's worth of calls

    class BurstBackend(FakeBackend):
        def generate(self, state, kp):
            calls["n"] += 1
            slow = 5.0 if calls["n"] <= busy_calls else 1.0
            CLOCK.t += self.delay_s * (slow - 1.0)
            return super().generate(state, kp)

    table = {("onnxruntime", "fp32"): (0.010, 0.0), ("openvino", "fp32"): (0.012, 0.0)}
    monkeypatch.setattr(autotune, "candidates", lambda: list(table))
    monkeypatch.setattr(autotune, "int8_ready", lambda loaded: True)
    monkeypatch.setattr(backends, "create_backend", lambda loaded, e, d, p, o=None: BurstBackend(*table[(e, p)]))
    monkeypatch.setattr("splinecam.engines.engine_cache.cache_root", lambda: tmp_path)
    choice = autotune.measure(golden_model, np.zeros((256, 256, 3), np.uint8), BackendOptions(threads=2), clock=CLOCK)
    assert (choice.engine, choice.precision) == ("onnxruntime", "fp32")
    ms = {(t.engine, t.precision): t.ms for t in choice.trials}
    assert ms[("onnxruntime", "fp32")] == pytest.approx(10.0) and ms[("openvino", "fp32")] == pytest.approx(12.0)
