"""The overlap / ordering logic of the GPU frame pipeline, on the CPU with a recording device;
the same pipeline on real CUDA streams is marked ``gpu`` (skipped without a GPU)."""

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

    def enqueue_keypoints(self, slot):
        self.h_kp[slot][:] = self.d_in[slot].mean()

    def host_keypoints(self, slot):
        return self.h_kp[slot]

    def solve(self, slot, kp):
        self.log.append(("solve", slot))
        self.tps[slot] = kp * 2

    def enqueue_generator(self, slot):
        self.h_out[slot][:] = self.d_in[slot] + 1

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


@pytest.mark.gpu
def test_pipeline_on_cuda_streams():
    torch = pytest.importorskip("torch")
    if not torch.cuda.is_available():
        pytest.skip("no CUDA GPU: the CUDA stream path has not run here")
    from splinecam.engines.cuda_pipeline import CudaStreamDevice

    class TorchStages(FakeStages):
        def enqueue_upload(self, slot):
            self.d_in[slot] = torch.from_numpy(self.h_in[slot]).to("cuda", non_blocking=True)

        def enqueue_keypoints(self, slot):
            self.h_kp[slot][:] = self.d_in[slot].float().mean().item()

        def enqueue_generator(self, slot):
            self.h_out[slot][:] = (self.d_in[slot] + 1).cpu().numpy()

    device = CudaStreamDevice()
    pipe = OverlappedPipeline(device, TorchStages(device), 2)
    out = [pipe.submit(f) for f in frames(4)] + [pipe.flush()]
    assert [r.index for r in out if r is not None] == [0, 1, 2, 3]
    assert all((r.frame == 10 * r.index + 1).all() for r in out if r is not None)
