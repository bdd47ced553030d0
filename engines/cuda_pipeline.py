"""Overlapped GPU frame pipeline: upload + preprocessing + keypoints of frame N+1 run on one CUDA
stream while the generator of frame N runs on another; pinned host buffers; events, never a
device-wide synchronisation.

The ordering logic lives in :class:`OverlappedPipeline` and talks to an abstract
:class:`StreamDevice` (streams, events, pinned buffers, launches), so it is tested on the CPU with
:class:`RecordingDevice`, which runs every launch at once and records the order of launches,
event records, stream waits and host waits. :class:`CudaStreamDevice` is the torch CUDA
implementation (``torch.cuda.Stream`` / ``torch.cuda.Event`` / pinned tensors).

Per call ``submit(frame N)`` (``depth`` = 2 buffer slots, slot = N mod depth):

1. host waits for ``upload_done[slot]`` (frame N−depth's copy out of the pinned input buffer)
   before writing frame N into it;
2. the keypoint stream waits (device side) for ``gen_done[slot]`` (generator N−depth read this
   slot's device keypoints), then: upload + preprocessing → record ``upload_done[slot]`` →
   keypoint engine + copy of the keypoints to pinned host memory → record ``kp_done[slot]``;
3. host waits for ``kp_done[slot]`` only (generator N−1 keeps running), solves the TPS on the
   host into the slot's pinned buffer;
4. the generator stream waits for ``kp_done[slot]``, then: TPS upload + generator + copy of the
   frame to pinned host memory → record ``gen_done[slot]``;
5. host waits for ``gen_done`` of frame N−1 and returns that frame (one frame of pipelining).

``flush()`` returns the last frame. Keypoints N+1 are therefore always enqueued before the host
waits on generator N.
"""

from __future__ import annotations

import abc
from dataclasses import dataclass, field
from typing import Any, Callable, Protocol

import numpy as np


# ---------------------------------------------------------------------------------- interfaces

class Stream(abc.ABC):
    name: str

    @abc.abstractmethod
    def wait_event(self, event: "Event", label: str = "") -> None:
        """Work enqueued later on this stream starts after ``event`` (device side; the host does not block)."""


class Event(abc.ABC):
    name: str

    @abc.abstractmethod
    def record(self, stream: Stream, label: str = "") -> None:
        """Mark the point reached by the work enqueued so far on ``stream``."""

    @abc.abstractmethod
    def synchronize(self, label: str = "") -> None:
        """Block the host until the recorded work has completed (no-op if never recorded)."""


class StreamDevice(abc.ABC):
    """Streams, events, pinned host buffers and launches of enqueued work on a stream."""

    @abc.abstractmethod
    def new_stream(self, name: str) -> Stream: ...

    @abc.abstractmethod
    def new_event(self, name: str) -> Event: ...

    @abc.abstractmethod
    def pinned(self, shape: tuple[int, ...], dtype) -> Any:
        """A page-locked host buffer (numpy-compatible)."""

    @abc.abstractmethod
    def launch(self, stream: Stream, label: str, fn: Callable[[], None]) -> None:
        """Run ``fn`` with ``stream`` current: whatever it enqueues goes on that stream."""


class PipelineStages(Protocol):
    """What a GPU backend supplies: buffers per slot and the work of each stage.

    host_input(slot): pinned (S,S,3) uint8 buffer the pipeline fills; enqueue_upload(slot): H2D copy
    + preprocessing on the current stream; enqueue_keypoints(slot): keypoint engine + D2H copy of
    the keypoints into pinned memory; host_keypoints(slot): those keypoints (K,2);
    solve(slot, kp): host work (normalisation, TPS solve) into the slot's pinned TPS buffers;
    enqueue_generator(slot): TPS upload + generator + D2H copy of the frame; host_output(slot): it.
    """

    def host_input(self, slot: int) -> np.ndarray: ...
    def enqueue_upload(self, slot: int) -> None: ...
    def enqueue_keypoints(self, slot: int) -> None: ...
    def host_keypoints(self, slot: int) -> np.ndarray: ...
    def solve(self, slot: int, kp: np.ndarray) -> None: ...
    def enqueue_generator(self, slot: int) -> None: ...
    def host_output(self, slot: int) -> np.ndarray: ...


# ---------------------------------------------------------------------------------- the pipeline

@dataclass
class PipelineResult:
    """A finished frame: its index, the (S,S,3) uint8 output (a copy), and the driving keypoints."""

    index: int
    frame: np.ndarray
    kp: np.ndarray


@dataclass
class _Slot:
    upload_done: Event
    kp_done: Event
    gen_done: Event
    frame_index: int = -1
    kp: np.ndarray | None = None
    generating: bool = False


class OverlappedPipeline:
    """Two streams (keypoints, generator), ``depth`` buffer slots, one frame of latency."""

    def __init__(self, device: StreamDevice, stages: PipelineStages, depth: int = 2):
        if depth < 2:
            raise ValueError("overlap needs at least 2 buffer slots")
        self.device = device
        self.stages = stages
        self.depth = depth
        self.kp_stream = device.new_stream("kp")
        self.gen_stream = device.new_stream("gen")
        self.slots = [_Slot(device.new_event(f"upload_done/{i}"), device.new_event(f"kp_done/{i}"),
                            device.new_event(f"gen_done/{i}")) for i in range(depth)]
        self.submitted = 0

    def submit(self, frame: np.ndarray) -> PipelineResult | None:
        """Enqueue frame N; return frame N−1 once it is done (None for the first frame)."""
        n = self.submitted
        slot_id = n % self.depth
        slot = self.slots[slot_id]
        dev, st = self.device, self.stages
        # 1. the pinned input buffer is free once frame n-depth's upload has completed
        slot.upload_done.synchronize(f"upload[{slot.frame_index}]")
        np.copyto(st.host_input(slot_id), frame)
        # 2. upload + preprocessing + keypoints on the kp stream; device buffers of this slot are
        #    free once generator n-depth (which read them) is done
        if slot.generating:
            self.kp_stream.wait_event(slot.gen_done, f"gen[{slot.frame_index}]")
        slot.frame_index = n
        dev.launch(self.kp_stream, f"upload[{n}]", lambda: st.enqueue_upload(slot_id))
        slot.upload_done.record(self.kp_stream, f"upload[{n}]")
        dev.launch(self.kp_stream, f"kp[{n}]", lambda: st.enqueue_keypoints(slot_id))
        slot.kp_done.record(self.kp_stream, f"kp[{n}]")
        # 3. host waits for this frame's keypoints only; the generator of frame n-1 keeps running
        slot.kp_done.synchronize(f"kp[{n}]")
        slot.kp = np.array(st.host_keypoints(slot_id), copy=True)
        st.solve(slot_id, slot.kp)
        # 4. generator n after kp n (device-side wait), queued behind generator n-1 on its stream
        self.gen_stream.wait_event(slot.kp_done, f"kp[{n}]")
        dev.launch(self.gen_stream, f"gen[{n}]", lambda: st.enqueue_generator(slot_id))
        slot.gen_done.record(self.gen_stream, f"gen[{n}]")
        slot.generating = True
        self.submitted += 1
        # 5. collect frame n-1
        return self._collect(n - 1) if n > 0 else None

    def flush(self) -> PipelineResult | None:
        """The last submitted frame (waits for it)."""
        return self._collect(self.submitted - 1) if self.submitted else None

    def _collect(self, index: int) -> PipelineResult:
        slot_id = index % self.depth
        slot = self.slots[slot_id]
        slot.gen_done.synchronize(f"gen[{index}]")
        return PipelineResult(index, np.array(self.stages.host_output(slot_id), copy=True), slot.kp)


# ---------------------------------------------------------------------------------- CPU recording

@dataclass
class RecordingDevice(StreamDevice):
    """CPU stand-in: launches run immediately; ``log`` records every stream / event operation.

    Log entries: ("launch", stream, label), ("record", event, stream, label),
    ("stream_wait", stream, event, label), ("host_wait", event, label).
    """

    log: list[tuple] = field(default_factory=list)

    def new_stream(self, name: str) -> Stream:
        return _RecStream(name, self.log)

    def new_event(self, name: str) -> Event:
        return _RecEvent(name, self.log)

    def pinned(self, shape, dtype) -> np.ndarray:
        return np.zeros(shape, dtype)

    def launch(self, stream: Stream, label: str, fn: Callable[[], None]) -> None:
        self.log.append(("launch", stream.name, label))
        fn()


class _RecStream(Stream):
    def __init__(self, name: str, log: list):
        self.name, self.log = name, log

    def wait_event(self, event: Event, label: str = "") -> None:
        self.log.append(("stream_wait", self.name, event.name, label))


class _RecEvent(Event):
    def __init__(self, name: str, log: list):
        self.name, self.log = name, log
        self.recorded = False

    def record(self, stream: Stream, label: str = "") -> None:
        self.recorded = True
        self.log.append(("record", self.name, stream.name, label))

    def synchronize(self, label: str = "") -> None:
        if self.recorded:
            self.log.append(("host_wait", self.name, label))


# ---------------------------------------------------------------------------------- torch CUDA

class CudaStreamDevice(StreamDevice):
    """torch CUDA streams and events, pinned host tensors (viewed as numpy arrays)."""

    def __init__(self, device: str = "cuda"):
        import torch

        if not torch.cuda.is_available():
            from splinecam.engines.errors import BackendUnavailableError

            raise BackendUnavailableError("the CUDA pipeline needs an NVIDIA GPU; none is visible to torch")
        self.torch = torch
        self.device = torch.device(device)
        self._pinned: list = []  # keep the tensors behind the numpy views alive

    def new_stream(self, name: str) -> Stream:
        return _CudaStream(name, self.torch.cuda.Stream(device=self.device))

    def new_event(self, name: str) -> Event:
        return _CudaEvent(name, self.torch.cuda.Event())

    def pinned(self, shape, dtype) -> np.ndarray:
        t = self.torch.from_numpy(np.zeros(shape, dtype)).pin_memory()
        self._pinned.append(t)
        return t.numpy()

    def launch(self, stream: Stream, label: str, fn: Callable[[], None]) -> None:
        with self.torch.cuda.stream(stream.raw):
            fn()


class _CudaStream(Stream):
    def __init__(self, name: str, raw):
        self.name, self.raw = name, raw

    def wait_event(self, event: Event, label: str = "") -> None:
        self.raw.wait_event(event.raw)


class _CudaEvent(Event):
    def __init__(self, name: str, raw):
        self.name, self.raw = name, raw
        self.recorded = False

    def record(self, stream: Stream, label: str = "") -> None:
        self.raw.record(stream.raw)
        self.recorded = True

    def synchronize(self, label: str = "") -> None:
        if self.recorded:
            self.raw.synchronize()
