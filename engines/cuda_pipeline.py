"""Overlapped GPU frame pipeline: upload + preprocessing + keypoints of frame N+1 run on one CUDA
stream while the generator of frame N runs on another; pinned host buffers; events, never a
device-wide synchronisation, and every host wait sleeps (blocking events) instead of spinning a core
the capture and tracking threads need.

The ordering logic lives in :class:`OverlappedPipeline` and talks to an abstract
:class:`StreamDevice` (streams, events, pinned and device buffers, launches), so it is tested on
the CPU with :class:`RecordingDevice`, which runs every launch at once on CPU tensors and records
the order of launches, event records, stream waits, host waits and cross-stream buffer uses.
:class:`CudaStreamDevice` is the torch CUDA implementation (``torch.cuda.Stream``,
``torch.cuda.Event(blocking=True)``, pinned tensors, ``Tensor.record_stream``).

A frame goes through the pipeline as a :class:`Ticket` (slot = ticket index mod ``depth``):

1. ``keypoints(frame)``: the host waits for ``upload_done[slot]`` (the previous upload out of the
   slot's pinned input buffer) before writing the frame into it; the keypoint stream waits (device
   side) for ``gen_done[slot]`` (the generator that last read this slot's device buffers), then runs
   upload + preprocessing → ``upload_done[slot]`` → keypoint engine [+ background engine] + copy of
   the keypoints to pinned host memory → ``kp_done[slot]``; the host waits for ``kp_done[slot]`` only
   (the generator of the previous frame keeps running) and gets the raw keypoints;
2. the caller's host work (smoothing, calibration, normalisation …) turns them into driving keypoints;
3. ``generate(ticket, kp)``: the TPS solve on the host into the slot's pinned buffers; the generator
   stream waits (device side) for ``kp_done[slot]``, then TPS upload + generator + copy of the frame to
   pinned host memory → ``gen_done[slot]``;
4. ``collect(ticket)``: the host waits for ``gen_done[slot]`` and copies the frame out.

``pose(kp)`` is a ticket without a camera frame (the live loop's hold / ease while no face is seen):
generator only. A slot is reused only once its previous ticket has been collected. ``submit(frame)``
runs 1–3 for frame N and collects frame N−1 (one frame of pipelining): keypoints N+1 are always
enqueued before the host waits on generator N, and generator N+1 is queued behind generator N.
``close()`` waits for every event recorded (nothing of ours is in flight) before the stages free
their buffers.
"""

from __future__ import annotations

import abc
import itertools
from dataclasses import dataclass, field
from typing import Any, Callable, Protocol

import numpy as np

#: the address alignment TensorRT requires of every I/O buffer (``set_tensor_address``)
ADDRESS_ALIGNMENT = 256


# ---------------------------------------------------------------------------------- interfaces

class Stream(abc.ABC):
    name: str
    #: the CUDA stream handle (``cudaStream_t`` as an int) that TensorRT's ``execute_async_v3`` takes;
    #: a distinct stand-in number on the recording device
    handle: int

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
        """Block the host (sleeping, not spinning) until the recorded work has completed (no-op if never
        recorded)."""


class StreamDevice(abc.ABC):
    """Streams, events, pinned host buffers, device buffers and launches of enqueued work on a stream."""

    #: the torch device the device buffers live on
    torch_device: Any

    @abc.abstractmethod
    def new_stream(self, name: str) -> Stream: ...

    @abc.abstractmethod
    def new_event(self, name: str) -> Event: ...

    @abc.abstractmethod
    def pinned(self, shape: tuple[int, ...], dtype) -> Any:
        """A page-locked host buffer (numpy array)."""

    @abc.abstractmethod
    def pinned_tensor(self, shape: tuple[int, ...], dtype) -> Any:
        """A page-locked host buffer (torch tensor, zeroed), the end of non-blocking copies."""

    @abc.abstractmethod
    def empty(self, shape: tuple[int, ...], dtype, stream: Stream | None = None) -> Any:
        """A device buffer (torch tensor) aligned to :data:`ADDRESS_ALIGNMENT` bytes, allocated for
        ``stream`` (the stream that writes it: its memory is reused only after that stream's work)."""

    @abc.abstractmethod
    def keep_alive(self, tensor, stream: Stream) -> None:
        """``tensor`` (allocated for another stream) is used on ``stream``: its memory must not be reused
        before the work enqueued there has completed (``Tensor.record_stream``)."""

    @abc.abstractmethod
    def launch(self, stream: Stream, label: str, fn: Callable[[], None]) -> None:
        """Run ``fn`` with ``stream`` current: whatever it enqueues goes on that stream."""

    def drain(self, stream: Stream, label: str = "drain") -> None:
        """Wait (host, sleeping) until everything enqueued on ``stream`` so far has completed."""
        event = self.new_event(f"drain/{stream.name}")
        event.record(stream, label)
        event.synchronize(label)


class PipelineStages(Protocol):
    """What a GPU backend supplies: buffers per slot and the work of each stage.

    bind(device, kp_stream, gen_stream, depth): allocate the per-slot buffers (called once by the
    pipeline, before any work); host_input(slot): pinned (S,S,3) uint8 buffer the pipeline fills;
    enqueue_upload(slot): H2D copy + preprocessing on the current stream; enqueue_keypoints(slot,
    source): keypoint engine [+ background engine] + D2H copy of the keypoints into pinned memory;
    host_keypoints(slot): those keypoints (K,2); solve(slot, kp, source, from_frame): host work (the
    TPS solve) into the slot's pinned buffers — ``from_frame`` False for a pose ticket (no camera
    frame, so no background motion); enqueue_generator(slot): TPS upload + generator + D2H copy of
    the frame; host_output(slot): it; close(): release the buffers (nothing is in flight then).
    ``source`` is the caller's avatar state, passed through untouched (None: the stages' own).
    """

    def bind(self, device: StreamDevice, kp_stream: Stream, gen_stream: Stream, depth: int) -> None: ...
    def host_input(self, slot: int) -> np.ndarray: ...
    def enqueue_upload(self, slot: int) -> None: ...
    def enqueue_keypoints(self, slot: int, source: Any) -> None: ...
    def host_keypoints(self, slot: int) -> np.ndarray: ...
    def solve(self, slot: int, kp: np.ndarray, source: Any, from_frame: bool) -> None: ...
    def enqueue_generator(self, slot: int) -> None: ...
    def host_output(self, slot: int) -> np.ndarray: ...
    def close(self) -> None: ...


# ---------------------------------------------------------------------------------- the pipeline

@dataclass
class Ticket:
    """A frame in the pipeline: its index, its buffer slot, and its raw driving keypoints (K,2) (None
    for a pose ticket, which has no camera frame)."""

    index: int
    slot: int
    kp: np.ndarray | None
    source: Any = None
    generated: bool = False
    collected: bool = False


@dataclass
class PipelineResult:
    """A finished frame: its index, the (S,S,3) uint8 output (a copy), and the raw driving keypoints."""

    index: int
    frame: np.ndarray
    kp: np.ndarray | None


@dataclass
class _Slot:
    upload_done: Event
    kp_done: Event
    gen_done: Event
    ticket: Ticket | None = None
    uploaded: bool = False     # upload_done recorded at least once
    generating: bool = False   # gen_done recorded at least once


class PipelineOrderError(RuntimeError):
    """A ticket used out of order (generated twice, collected before it was generated, a slot reused
    before its frame was collected)."""


class OverlappedPipeline:
    """Two streams (keypoints, generator), ``depth`` buffer slots (see the module docstring)."""

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
        bind = getattr(stages, "bind", None)
        if bind is not None:
            bind(device, self.kp_stream, self.gen_stream, depth)
        self.issued = 0
        self._last: Ticket | None = None
        self.closed = False

    # ------------------------------------------------------------ tickets

    def _take_slot(self, kp: np.ndarray | None, source: Any) -> tuple[Ticket, _Slot]:
        if self.closed:
            raise PipelineOrderError("the pipeline is closed")
        n = self.issued
        slot = self.slots[n % self.depth]
        previous = slot.ticket
        if previous is not None and previous.generated and not previous.collected:
            raise PipelineOrderError(f"frame {n} needs slot {n % self.depth}: collect frame {previous.index} first")
        ticket = Ticket(n, n % self.depth, kp, source)
        self.issued += 1
        return ticket, slot

    def keypoints(self, frame: np.ndarray, source: Any = None) -> Ticket:
        """Steps 1: frame (S,S,3) uint8 → a ticket holding its raw keypoints (the host waited for them only)."""
        ticket, slot = self._take_slot(None, source)
        n, s, dev, st = ticket.index, ticket.slot, self.device, self.stages
        previous = slot.ticket
        # the pinned input buffer is free once the slot's previous upload has completed
        if slot.uploaded:
            slot.upload_done.synchronize(f"upload[{previous.index if previous else '?'}]")
        np.copyto(st.host_input(s), frame)
        # device buffers of this slot are free once the generator that last read them is done
        if slot.generating:
            self.kp_stream.wait_event(slot.gen_done, f"gen[{previous.index if previous else '?'}]")
        slot.ticket = ticket
        dev.launch(self.kp_stream, f"upload[{n}]", lambda: st.enqueue_upload(s))
        slot.upload_done.record(self.kp_stream, f"upload[{n}]")
        slot.uploaded = True
        dev.launch(self.kp_stream, f"kp[{n}]", lambda: st.enqueue_keypoints(s, source))
        slot.kp_done.record(self.kp_stream, f"kp[{n}]")
        # the host waits for this frame's keypoints only; the generator of the frame before keeps running
        slot.kp_done.synchronize(f"kp[{n}]")
        ticket.kp = np.array(st.host_keypoints(s), copy=True)
        return ticket

    def generate(self, ticket: Ticket, kp_driving: np.ndarray) -> None:
        """Step 3: the TPS solve for ``kp_driving`` (K,2) on the host, then the generator, queued behind
        the previous frame's on the generator stream and after this frame's keypoints (device side)."""
        slot = self.slots[ticket.slot]
        if slot.ticket is not ticket or ticket.generated:
            raise PipelineOrderError(f"frame {ticket.index}: generate once, after its keypoints")
        self.stages.solve(ticket.slot, kp_driving, ticket.source, ticket.kp is not None)
        if ticket.kp is not None:
            self.gen_stream.wait_event(slot.kp_done, f"kp[{ticket.index}]")
        self._enqueue_generator(ticket, slot)

    def pose(self, kp_driving: np.ndarray, source: Any = None) -> Ticket:
        """A ticket without a camera frame: the generator for ``kp_driving`` (K,2) only (no background motion)."""
        ticket, slot = self._take_slot(None, source)
        slot.ticket = ticket
        self.stages.solve(ticket.slot, kp_driving, source, False)
        self._enqueue_generator(ticket, slot)
        return ticket

    def _enqueue_generator(self, ticket: Ticket, slot: _Slot) -> None:
        s, n = ticket.slot, ticket.index
        self.device.launch(self.gen_stream, f"gen[{n}]", lambda: self.stages.enqueue_generator(s))
        slot.gen_done.record(self.gen_stream, f"gen[{n}]")
        slot.generating = True
        ticket.generated = True

    def collect(self, ticket: Ticket) -> PipelineResult:
        """Step 4: wait for the ticket's generator and return its frame."""
        slot = self.slots[ticket.slot]
        if slot.ticket is not ticket or not ticket.generated or ticket.collected:
            raise PipelineOrderError(f"frame {ticket.index}: collect once, after generate")
        slot.gen_done.synchronize(f"gen[{ticket.index}]")
        ticket.collected = True
        return PipelineResult(ticket.index, np.array(self.stages.host_output(ticket.slot), copy=True), ticket.kp)

    # ------------------------------------------------------------ one call per frame

    def submit(self, frame: np.ndarray, prepare: Callable[[np.ndarray], np.ndarray] | None = None,
               source: Any = None) -> PipelineResult | None:
        """Enqueue frame N (``prepare`` maps its raw keypoints to driving keypoints on the host; identity
        when None); return frame N−1 once it is done (None for the first frame)."""
        ticket = self.keypoints(frame, source)
        self.generate(ticket, prepare(ticket.kp) if prepare is not None else ticket.kp)
        previous, self._last = self._last, ticket
        return self.collect(previous) if previous is not None else None

    def flush(self) -> PipelineResult | None:
        """The last submitted frame (waits for it)."""
        last, self._last = self._last, None
        return self.collect(last) if last is not None and not last.collected else None

    def close(self) -> None:
        """Wait for every event recorded (nothing of ours is left in flight), then release the buffers."""
        if self.closed:
            return
        self.closed = True
        for slot in self.slots:
            if slot.uploaded:
                slot.upload_done.synchronize("close")
                slot.kp_done.synchronize("close")
            if slot.generating:
                slot.gen_done.synchronize("close")
        close = getattr(self.stages, "close", None)
        if close is not None:
            close()


# ---------------------------------------------------------------------------------- CPU recording

def _aligned_cpu_empty(shape, dtype):
    import torch

    shape = tuple(int(d) for d in shape)
    itemsize = torch.empty((), dtype=dtype).element_size()
    nbytes = int(np.prod(shape, dtype=np.int64)) * itemsize
    raw = torch.empty(nbytes + ADDRESS_ALIGNMENT, dtype=torch.uint8)
    offset = (-raw.data_ptr()) % ADDRESS_ALIGNMENT
    return raw[offset:offset + nbytes].view(dtype).view(shape)


@dataclass
class RecordingDevice(StreamDevice):
    """CPU stand-in: launches run immediately on CPU tensors; ``log`` records every stream / event
    operation and every cross-stream buffer use.

    Log entries: ("launch", stream, label), ("record", event, stream, label),
    ("stream_wait", stream, event, label), ("host_wait", event, label),
    ("keep_alive", stream, data_ptr), ("alloc", stream or None, data_ptr).
    """

    log: list[tuple] = field(default_factory=list)

    def __post_init__(self):
        import torch

        self.torch_device = torch.device("cpu")
        self._handles = itertools.count(0x5000, 0x10)

    def new_stream(self, name: str) -> Stream:
        return _RecStream(name, next(self._handles), self.log)

    def new_event(self, name: str) -> Event:
        return _RecEvent(name, self.log)

    def pinned(self, shape, dtype) -> np.ndarray:
        return np.zeros(shape, dtype)

    def pinned_tensor(self, shape, dtype):
        import torch

        return torch.zeros(shape, dtype=dtype)

    def empty(self, shape, dtype, stream: Stream | None = None):
        t = _aligned_cpu_empty(shape, dtype)
        self.log.append(("alloc", stream.name if stream else None, t.data_ptr()))
        return t

    def keep_alive(self, tensor, stream: Stream) -> None:
        self.log.append(("keep_alive", stream.name, tensor.data_ptr()))

    def launch(self, stream: Stream, label: str, fn: Callable[[], None]) -> None:
        self.log.append(("launch", stream.name, label))
        fn()


class _RecStream(Stream):
    def __init__(self, name: str, handle: int, log: list):
        self.name, self.handle, self.log = name, handle, log

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
    """torch CUDA streams, blocking events (the host sleeps in ``synchronize()``), pinned host tensors,
    device buffers from torch's caching allocator (512-byte aligned blocks), ``record_stream``."""

    def __init__(self, device: str = "cuda"):
        import torch

        if not torch.cuda.is_available():
            from splinecam.engines.errors import BackendUnavailableError

            raise BackendUnavailableError("the CUDA pipeline needs an NVIDIA GPU; none is visible to torch")
        self.torch = torch
        dev = torch.device(device)
        self.torch_device = torch.device("cuda", dev.index if dev.index is not None else torch.cuda.current_device())
        self._pinned: list = []  # keep the tensors behind the numpy views alive

    def new_stream(self, name: str) -> Stream:
        return _CudaStream(name, self.torch.cuda.Stream(device=self.torch_device))

    def new_event(self, name: str) -> Event:
        # blocking: synchronize() sleeps on the event instead of spinning a CPU core (the default
        # torch.cuda.Event() busy-waits), which the capture and tracking threads need
        return _CudaEvent(name, self.torch.cuda.Event(blocking=True))

    def pinned(self, shape, dtype) -> np.ndarray:
        t = self.torch.from_numpy(np.zeros(shape, dtype)).pin_memory()
        self._pinned.append(t)
        return t.numpy()

    def pinned_tensor(self, shape, dtype):
        return self.torch.zeros(shape, dtype=dtype).pin_memory()

    def empty(self, shape, dtype, stream: Stream | None = None):
        if stream is None:
            return self.torch.empty(shape, dtype=dtype, device=self.torch_device)
        with self.torch.cuda.stream(stream.raw):
            return self.torch.empty(shape, dtype=dtype, device=self.torch_device)

    def keep_alive(self, tensor, stream: Stream) -> None:
        tensor.record_stream(stream.raw)

    def launch(self, stream: Stream, label: str, fn: Callable[[], None]) -> None:
        with self.torch.cuda.stream(stream.raw):
            fn()


class _CudaStream(Stream):
    def __init__(self, name: str, raw):
        self.name, self.raw = name, raw
        self.handle = raw.cuda_stream

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
