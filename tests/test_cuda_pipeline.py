"""The overlap / ordering logic of the GPU frame pipeline, on the CPU with a recording device (tickets,
pose frames, slot reuse, close, blocking events); the same pipeline on real CUDA streams is marked
``gpu`` (skipped without a GPU). The TensorRT stages on this pipeline: tests/test_tensorrt.py."""

from __future__ import annotations

import numpy as np
import pytest

from splinecam.engines.cuda_pipeline import OverlappedPipeline, RecordingDevice

S, K = 8, 4


class FakeStages:
    """Keypoints = mean colour of the frame; output = frame + 1 (so results are checkable)."""

    def __init__(self, device, depth=2):
        self.log = device.log if hasattr(device, "log") else []
        self.h_in = [device.pinned((S, S, 3), np.uint8) for _ in range(depth)]
        self.d_in = [None] * depth
        self.h_kp = [np.zeros((K, 2), np.float32) for _ in range(depth)]
        self.tps = [None] * depth
        self.h_out = [np.zeros((S, S, 3), np.uint8) for _ in range(depth)]

    def host_input(self, slot):
        return self.h_in[slot]

    def enqueue_upload(self, slot):
        self.d_in[slot] = self.h_in[slot].copy()

    def enqueue_keypoints(self, slot, source=None):
        self.h_kp[slot][:] = self.d_in[slot].mean()

    def host_keypoints(self, slot):
        return self.h_kp[slot]

    def solve(self, slot, kp, source=None, from_frame=True):
        self.log.append(("solve", slot))
        self.tps[slot] = kp * 2
        self.from_frame = getattr(self, "from_frame", {})
        self.from_frame[slot] = from_frame

    def enqueue_generator(self, slot):
        if self.from_frame[slot]:
            self.h_out[slot][:] = self.d_in[slot] + 1
        else:  # a pose ticket: no camera frame; the output encodes the driving keypoints
            self.h_out[slot][:] = np.uint8(self.tps[slot].mean() / 2)

    def close(self):
        self.log.append(("stages_close",))

    def host_output(self, slot):
        return self.h_out[slot]


def frames(n):
    return [np.full((S, S, 3), 10 * i, np.uint8) for i in range(n)]


def run(n=5, depth=2):
    device = RecordingDevice()
    pipe = OverlappedPipeline(device, FakeStages(device, depth), depth)
    results = [pipe.submit(f) for f in frames(n)]
    results.append(pipe.flush())
    return device.log, results


def index_of(log, entry):
    return log.index(entry)


def test_results_come_out_in_order_one_frame_late():
    _, results = run(5)
    assert results[0] is None
    done = [r for r in results if r is not None]
    assert [r.index for r in done] == [0, 1, 2, 3, 4]
    for r in done:
        assert (r.frame == 10 * r.index + 1).all()
        assert np.allclose(r.kp, 10 * r.index)


def test_keypoints_of_next_frame_enqueued_before_waiting_on_generator():
    log, _ = run(5)
    for n in range(1, 5):
        kp_next = index_of(log, ("launch", "kp", f"kp[{n}]"))
        wait_gen_prev = index_of(log, ("host_wait", f"gen_done/{(n - 1) % 2}", f"gen[{n - 1}]"))
        assert kp_next < wait_gen_prev
        # and generator n is queued before the host blocks on generator n-1: the GPU never idles
        assert index_of(log, ("launch", "gen", f"gen[{n}]")) < wait_gen_prev


def test_generator_waits_on_its_own_keypoints_event():
    log, _ = run(5)
    for n in range(5):
        slot = n % 2
        record = index_of(log, ("record", f"kp_done/{slot}", "kp", f"kp[{n}]"))
        wait = index_of(log, ("stream_wait", "gen", f"kp_done/{slot}", f"kp[{n}]"))
        launch = index_of(log, ("launch", "gen", f"gen[{n}]"))
        assert record < wait < launch


def test_host_waits_only_for_keypoints_before_solving():
    log, _ = run(4)
    solves = [i for i, e in enumerate(log) if e[0] == "solve"]
    for n, i in enumerate(solves):
        assert log[i - 1] == ("host_wait", f"kp_done/{n % 2}", f"kp[{n}]")
    # no device-wide synchronisation: every host wait names one event
    assert all(len(e) == 3 and e[1].count("/") == 1 for e in log if e[0] == "host_wait")


def test_pinned_input_reused_only_after_its_upload_event():
    log, _ = run(6, depth=2)
    for n in range(2, 6):
        slot = n % 2
        waited = index_of(log, ("host_wait", f"upload_done/{slot}", f"upload[{n - 2}]"))
        recorded = index_of(log, ("record", f"upload_done/{slot}", "kp", f"upload[{n - 2}]"))
        upload = index_of(log, ("launch", "kp", f"upload[{n}]"))
        assert recorded < waited < upload


def test_device_buffers_reused_only_after_the_generator_that_read_them():
    log, _ = run(6, depth=3)
    for n in range(3, 6):
        slot = n % 3
        wait = index_of(log, ("stream_wait", "kp", f"gen_done/{slot}", f"gen[{n - 3}]"))
        assert index_of(log, ("record", f"gen_done/{slot}", "gen", f"gen[{n - 3}]")) < wait
        assert wait < index_of(log, ("launch", "kp", f"upload[{n}]"))


def test_depth_below_two_is_refused():
    with pytest.raises(ValueError):
        OverlappedPipeline(RecordingDevice(), FakeStages(RecordingDevice(), 1), depth=1)


def test_pose_tickets_run_the_generator_only_in_order_with_frames():
    device = RecordingDevice()
    pipe = OverlappedPipeline(device, FakeStages(device), 2)
    t0 = pipe.keypoints(frames(1)[0])
    pipe.generate(t0, t0.kp)
    p1 = pipe.pose(np.full((K, 2), 6, np.float32))        # no face: hold the last pose
    r0 = pipe.collect(t0)
    t2 = pipe.keypoints(np.full((S, S, 3), 50, np.uint8))
    pipe.generate(t2, t2.kp)
    r1, r2 = pipe.collect(p1), pipe.collect(t2)
    assert [r.index for r in (r0, r1, r2)] == [0, 1, 2]
    assert (r0.frame == 1).all() and (r1.frame == 6).all() and (r2.frame == 51).all()
    assert r1.kp is None and np.allclose(r2.kp, 50)
    log = device.log
    # the pose ticket launches no upload or keypoints and waits on no keypoint event
    assert ("launch", "kp", "upload[1]") not in log and ("launch", "kp", "kp[1]") not in log
    assert not any(e[0] == "stream_wait" and e[3] == "kp[1]" for e in log)
    # the generator stream runs gen[0], gen[1], gen[2] in that order
    gens = [e[2] for e in log if e[:2] == ("launch", "gen")]
    assert gens == ["gen[0]", "gen[1]", "gen[2]"]


def test_a_slot_is_reused_only_after_its_frame_was_collected():
    from splinecam.engines.cuda_pipeline import PipelineOrderError

    device = RecordingDevice()
    pipe = OverlappedPipeline(device, FakeStages(device), 2)
    t0 = pipe.keypoints(frames(1)[0])
    pipe.generate(t0, t0.kp)
    t1 = pipe.keypoints(frames(2)[1])
    pipe.generate(t1, t1.kp)
    with pytest.raises(PipelineOrderError, match="collect frame 0"):
        pipe.keypoints(frames(3)[2])                     # slot 0 still holds frame 0's output
    with pytest.raises(PipelineOrderError):
        pipe.generate(t1, t1.kp)                         # twice
    pipe.collect(t0)
    with pytest.raises(PipelineOrderError):
        pipe.collect(t0)                                 # twice
    t2 = pipe.keypoints(frames(3)[2])                    # slot 0 is free again
    assert t2.slot == 0


def test_close_waits_for_every_recorded_event_before_the_stages_free_their_buffers():
    device = RecordingDevice()
    pipe = OverlappedPipeline(device, FakeStages(device), 2)
    for f in frames(3):
        pipe.submit(f)                                   # frame 2 still in flight: never collected
    pipe.close()
    log = device.log
    closed = log.index(("stages_close",))
    waits = {e[1] for e in log[:closed] if e[0] == "host_wait" and e[2] == "close"}
    recorded = {e[1] for e in log if e[0] == "record"}
    assert waits == recorded                             # every event we recorded, waited for at close
    assert pipe.closed and log.count(("stages_close",)) == 1
    pipe.close()                                         # idempotent
    assert log.count(("stages_close",)) == 1


def test_cuda_events_are_blocking(monkeypatch):
    """Issue 19 item 10: torch.cuda.Event() is non-blocking by default (synchronize() spins a core);
    the CUDA device makes every event with blocking=True. Checked on the CPU with torch.cuda stubbed."""
    import torch

    from splinecam.engines import cuda_pipeline

    made = []

    class Event:
        def __init__(self, **kwargs):
            made.append(kwargs)

    monkeypatch.setattr(torch.cuda, "is_available", lambda: True)
    monkeypatch.setattr(torch.cuda, "current_device", lambda: 0)
    monkeypatch.setattr(torch.cuda, "Event", Event)
    device = cuda_pipeline.CudaStreamDevice()
    device.new_event("kp_done/0")
    assert made == [{"blocking": True}]
    assert device.torch_device == torch.device("cuda", 0)  # an explicit index: tensors compare equal to it


@pytest.mark.gpu
def test_blocking_event_sleeps_instead_of_spinning():
    """On a GPU: waiting ~0.3 s on a blocking event costs the host far less CPU time than wall time."""
    import time

    torch = pytest.importorskip("torch")
    if not torch.cuda.is_available():
        pytest.skip("no CUDA GPU: blocking events have not run here")
    from splinecam.engines.cuda_pipeline import CudaStreamDevice

    device = CudaStreamDevice()
    stream, event = device.new_stream("s"), device.new_event("e")
    cycles = int(torch.cuda.get_device_properties(0).clock_rate * 1000 * 0.3)  # kHz → ~0.3 s of cycles
    device.launch(stream, "sleep", lambda: torch.cuda._sleep(cycles))
    event.record(stream)
    wall, cpu = time.perf_counter(), time.process_time()
    event.synchronize()
    wall, cpu = time.perf_counter() - wall, time.process_time() - cpu
    assert wall > 0.1 and cpu < 0.5 * wall, (wall, cpu)


@pytest.mark.gpu
def test_pipeline_on_cuda_streams():
    torch = pytest.importorskip("torch")
    if not torch.cuda.is_available():
        pytest.skip("no CUDA GPU: the CUDA stream path has not run here")
    from splinecam.engines.cuda_pipeline import CudaStreamDevice

    class TorchStages(FakeStages):
        def enqueue_upload(self, slot):
            self.d_in[slot] = torch.from_numpy(self.h_in[slot]).to("cuda", non_blocking=True)

        def enqueue_keypoints(self, slot, source=None):
            self.h_kp[slot][:] = self.d_in[slot].float().mean().item()

        def enqueue_generator(self, slot):
            self.h_out[slot][:] = (self.d_in[slot] + 1).cpu().numpy()

    device = CudaStreamDevice()
    pipe = OverlappedPipeline(device, TorchStages(device), 2)
    out = [pipe.submit(f) for f in frames(4)] + [pipe.flush()]
    assert [r.index for r in out if r is not None] == [0, 1, 2, 3]
    assert all((r.frame == 10 * r.index + 1).all() for r in out if r is not None)
