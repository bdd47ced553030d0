"""The loop's helpers yield to inference (engines/priority.py, issue #12): the recorder's encoder at the
lowest CPU priority and fed in the networks' gaps, its feeder thread niced, the caller's thread untouched."""

from __future__ import annotations

import os
import sys
import threading
import time

import numpy as np
import pytest

from splinecam.engines.priority import GATE, InferenceGate, lower_this_thread_priority
from splinecam.live.sinks import OutputFrame, RecorderSink

linux = pytest.mark.skipif(not sys.platform.startswith("linux"), reason="per-thread nice values are Linux's")


def test_gate_is_idle_until_a_network_runs_and_again_after():
    gate = InferenceGate()
    assert gate.wait_idle(0.0)
    with gate.busy():
        assert not gate.wait_idle(0.01)
        with gate.busy():  # nested (a pose inside a frame): idle only when the outer one ends
            pass
        assert not gate.wait_idle(0.0)
    assert gate.wait_idle(0.0)


def test_gate_is_idle_after_a_network_that_raised():
    gate = InferenceGate()
    with pytest.raises(RuntimeError):
        with gate.busy():
            raise RuntimeError("a network failed")
    assert gate.wait_idle(0.0)


def test_recorder_waits_for_the_networks_gap_then_writes(monkeypatch, tmp_path):
    written = []

    class Writer:
        def __init__(self, *a, **k):
            self.frames_written = 0

        def write(self, image):
            written.append(time.perf_counter())
            self.frames_written += 1

        def close(self):
            pass

    monkeypatch.setattr("splinecam.engines.media.VideoWriter", Writer)
    rec = RecorderSink(tmp_path / "x.mp4", 1.0, (6, 4), block=True)  # fps 1: it would wait up to 1 s
    with GATE.busy():
        rec.send(OutputFrame(np.zeros((4, 6, 3), np.uint8), None, "animated", 0))
        time.sleep(0.3)
        assert written == []                      # not in the middle of the networks' work
        released = time.perf_counter()
    deadline = time.perf_counter() + 2.0
    while not written and time.perf_counter() < deadline:
        time.sleep(0.005)
    rec.close()
    assert written and written[0] >= released and rec.frames_written == 1


def test_recorder_writes_anyway_when_the_networks_never_pause(monkeypatch, tmp_path):
    """A CPU too slow to leave gaps: each frame waits at most one period, the recording stays complete."""
    class Writer:
        def __init__(self, *a, **k):
            self.frames_written = 0

        def write(self, image):
            self.frames_written += 1

        def close(self):
            pass

    monkeypatch.setattr("splinecam.engines.media.VideoWriter", Writer)
    rec = RecorderSink(tmp_path / "x.mp4", 50.0, (6, 4), block=True)
    with GATE.busy():
        for i in range(5):
            rec.send(OutputFrame(np.zeros((4, 6, 3), np.uint8), None, "animated", i))
        deadline = time.perf_counter() + 3.0
        while rec.frames_written < 5 and time.perf_counter() < deadline:
            time.sleep(0.01)
        assert rec.frames_written == 5
    rec.close()


@linux
def test_live_recorder_encoder_runs_at_the_lowest_priority(tmp_path):
    rec = RecorderSink(tmp_path / "rec.mp4", 25.0, (64, 48), block=True)
    try:
        pid = rec.writer._proc.pid
        assert os.getpriority(os.PRIO_PROCESS, pid) == 19
        assert os.getpriority(os.PRIO_PROCESS, 0) < 19         # splinecam itself is not lowered
        rec.send(OutputFrame(np.full((48, 64, 3), 90, np.uint8), None, "animated", 0))
    finally:
        rec.close()
    assert rec.frames_written == 1


@linux
def test_lowering_a_thread_leaves_the_others_alone():
    before = os.getpriority(os.PRIO_PROCESS, threading.get_native_id())
    seen = {}

    def helper():
        seen["ok"] = lower_this_thread_priority(5)
        seen["nice"] = os.getpriority(os.PRIO_PROCESS, threading.get_native_id())

    t = threading.Thread(target=helper)
    t.start()
    t.join()
    assert seen["ok"] and seen["nice"] == min(19, before + 5)
    assert os.getpriority(os.PRIO_PROCESS, threading.get_native_id()) == before


def test_idle_gap_benchmark_times_every_gap_on_the_bundled_model(capsys):
    pytest.importorskip("openvino")
    from splinecam.benchmarks import idle_gap

    assert idle_gap.main(["--threads", "1", "--calls", "2", "--rounds", "1"]) == 0
    line = capsys.readouterr().out.strip().splitlines()[-1]
    assert "1 thread: back-to-back" in line and "after 5 ms idle" in line and "after 25 ms idle" in line


def test_paced_vs_unpaced_reports_medians_of_alternated_runs(monkeypatch, tmp_path, capsys):
    """The tool behind the committed paced-vs-unpaced JSONs: runs alternate, medians and ratios come
    from every run's --metrics JSON (fake runs here: the real ones are `splinecam demo`)."""
    import json

    from splinecam.benchmarks import paced_vs_unpaced as pvu

    order = []

    def fake(paced, flags, tmp):
        order.append(paced)
        n = len(order)
        return {"stages_ms": {"generate": 12.0 + n if paced else 10.0 + n}, "fps": {"processed": 25.0 if paced else 40.0},
                "latency_ms": {"p95": 40.0}, "frames": {"dropped": 1 if paced else 0, "captured": 100},
                "backend": "openvino", "device": "cpu", "precision": "bf16"}

    monkeypatch.setattr(pvu, "run_demo", fake)
    out = tmp_path / "r.json"
    assert pvu.main(["--runs", "3", "--json", str(out), "--", "--backend", "openvino"]) == 0
    assert order == [False, True] * 3
    data = json.loads(out.read_text())
    assert data["demo_flags"] == ["--backend", "openvino"]
    assert data["medians"]["unpaced"]["generate_ms"] == 13.0 and data["medians"]["paced"]["generate_ms"] == 16.0
    assert data["paced_generate_vs_unpaced"] == pytest.approx(16 / 13)
    assert data["paced_dropped_share"] == pytest.approx(3 / 300)
    assert "+23 %" in capsys.readouterr().out
