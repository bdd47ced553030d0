"""CPU speed: splinecam's CPU backends against the official demo's per-frame work, in one run.

    python -m splinecam.benchmarks.cpu_speed [--config vox-256] [--rounds 3] [--out benchmarks/results/cpu_speed.json]
                                   [--pause-training]

Model: ``--config`` network (vox-256 by default) with random weights whose norm layers are
perturbed like golden-small (:func:`splinecam.engines.tpsmm.random_weights.perturbed_random_model`).
Frames: the official demo pair from ``reference/golden-small/io.npz`` (source + 5 driving frames,
256×256), quantised to uint8 as a camera delivers them. Every frame is computed in full by every
variant: no frame skipping, no lower resolution.

* baseline — the official demo's per-frame work: ``kp_detector(driving)`` + ``TPSMM.animate``
  (dense motion + inpainting, source encoder included), torch float32 eager, uncached, source
  keypoints computed once, no background, ``torch.set_num_threads(threads)``.
* each splinecam variant — ``backend.keypoints(frame)`` + ``backend.generate(state, kp)`` through
  the Backend interface (uint8 in, uint8 out, host TPS solve included), source prepared once.

Variants run interleaved frame by frame in a rotating order, so load changes hit all of them alike;
speed-ups are ratios of medians measured in the same run. Quality: PSNR of each variant's output
against the baseline's float32 output for the same frame (and, untimed, for a large synthetic
keypoint motion, since random-weight keypoints barely move). ``--pause-training`` SIGSTOPs
processes that look like a training run (``torchrun`` / ``splinecam train`` / ``splinecam.training.trainer``)
for the duration and always SIGCONTs them.
"""

from __future__ import annotations

import argparse
import contextlib
import copy
import json
import os
import platform
import re
import signal
import statistics
import subprocess
import sys
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Callable, Iterator

import numpy as np

REPO = Path(__file__).resolve().parents[1]
DEFAULT_VARIANTS = ("torch-fp32", "torch-bf16", "torch-bf16-compiled", "torch-fp32-compiled", "onnxruntime-fp32",
                    "onnxruntime-fp16")
TRAINING_PATTERN = r"torchrun|splinecam train|training\.trainer|-m training"
PSNR_FLOOR_DB = 35.0


# ------------------------------------------------------------------------------------ helpers

def psnr(a: np.ndarray, b: np.ndarray) -> float:
    """PSNR in dB of two images in [0,1] (float arrays of the same shape); 99 for identical ones."""
    mse = float(np.mean((np.asarray(a, np.float64) - np.asarray(b, np.float64)) ** 2))
    return 99.0 if mse == 0 else float(10 * np.log10(1.0 / mse))


def time_call(fn: Callable[[], object]) -> tuple[float, object]:
    """(milliseconds, result) of one call."""
    t0 = time.perf_counter()
    out = fn()
    return (time.perf_counter() - t0) * 1000.0, out


def shared_dir() -> Path:
    return Path(os.environ.get("SPLINECAM_SHARED", REPO.parent / "shared"))


def demo_frames() -> tuple[np.ndarray, list[np.ndarray]]:
    """(source (S,S,3) uint8, driving frames [(S,S,3) uint8]) — the official demo pair, 256×256."""
    with np.load(shared_dir() / "reference" / "golden-small" / "io.npz") as f:
        source, driving = f["source"], f["driving"]
    to_u8 = lambda x: np.clip(np.rint(x * 255), 0, 255).astype(np.uint8)  # noqa: E731
    return to_u8(source), [to_u8(d) for d in driving]


def cpu_description() -> dict:
    """CPU model, cores, the flags that matter, library versions (device info for the JSON)."""
    try:
        from splinecam.benchmarks.device_info import collect_device_info  # the bench package's, when present

        import torch

        return asdict(collect_device_info(torch.get_num_threads()))
    except Exception:
        pass
    import onnxruntime
    import torch

    model, flags = None, []
    try:
        text = Path("/proc/cpuinfo").read_text()
        m = re.search(r"model name\s*:\s*(.+)", text)
        model = m.group(1).strip() if m else None
        have = set(re.search(r"flags\s*:\s*(.+)", text).group(1).split())
        flags = [f for f in ("avx2", "avx512f", "avx512_bf16", "amx_bf16", "amx_tile", "avx512_fp16") if f in have]
    except (OSError, AttributeError):
        pass
    return {"cpu_model": model, "cpu_cores_logical": os.cpu_count(), "cpu_flags": flags,
            "threads": torch.get_num_threads(), "torch_version": torch.__version__,
            "onnxruntime_version": onnxruntime.__version__, "numpy_version": np.__version__,
            "python_version": platform.python_version()}


class Pauser:
    """SIGSTOPs other processes whose command line matches a pattern; ``refresh()`` stops them again
    (someone may have resumed one) and catches ones started since (a training run restarted
    mid-benchmark); ``resume()`` SIGCONTs them all."""

    def __init__(self, pattern: str | None):
        self.pattern = pattern
        self.stopped: list[int] = []

    def refresh(self) -> list[int]:
        if not self.pattern:
            return []
        out = subprocess.run(["ps", "-eo", "pid=,args="], capture_output=True, text=True).stdout
        me = {os.getpid(), os.getppid()}
        new = []
        for line in out.splitlines():
            pid_s, _, args = line.strip().partition(" ")
            if (pid_s.isdigit() and int(pid_s) not in me and re.search(self.pattern, args)
                    and "cpu_speed" not in args):
                with contextlib.suppress(ProcessLookupError):
                    os.kill(int(pid_s), signal.SIGSTOP)  # again, if already stopped: idempotent
                    if int(pid_s) not in self.stopped:
                        self.stopped.append(int(pid_s))
                        new.append(int(pid_s))
        if new:
            print(f"paused {new} (matching {self.pattern!r}) for the benchmark", flush=True)
        return new

    def __iter__(self):  # behaves as the list of paused pids
        return iter(list(self.stopped))

    def __repr__(self) -> str:
        return repr(self.stopped)

    def resume(self) -> None:
        for pid in self.stopped:
            with contextlib.suppress(ProcessLookupError):
                os.kill(pid, signal.SIGCONT)


BENCH_LOCK = Path(os.environ.get("TMPDIR", "/tmp")) / "splinecam-benchmark.lock"


@contextlib.contextmanager
def benchmark_lock() -> Iterator[None]:
    """One benchmark at a time on this machine (an exclusive flock on BENCH_LOCK; waits for it)."""
    import fcntl

    with open(BENCH_LOCK, "a") as f:
        try:
            fcntl.flock(f, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            print(f"waiting for another benchmark to finish ({BENCH_LOCK}) …", flush=True)
            fcntl.flock(f, fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(f, fcntl.LOCK_UN)


@contextlib.contextmanager
def paused_processes(pattern: str | None) -> Iterator[Pauser]:
    """Pause matching processes for the duration of the block; SIGCONT them afterwards, always
    (also when this process is stopped by SIGTERM / SIGINT). Holds :func:`benchmark_lock`, so two
    benchmarks never pause / resume the same processes under each other."""
    with benchmark_lock():
        with _paused(pattern) as pauser:
            yield pauser


@contextlib.contextmanager
def _paused(pattern: str | None) -> Iterator[Pauser]:
    pauser = Pauser(pattern)
    previous = {s: signal.getsignal(s) for s in (signal.SIGTERM, signal.SIGINT)}

    def on_signal(signum, frame):
        pauser.resume()
        signal.signal(signum, previous[signum])
        os.kill(os.getpid(), signum)

    try:
        for s in previous:
            signal.signal(s, on_signal)
        pauser.refresh()
        yield pauser
    finally:
        pauser.resume()
        for s, h in previous.items():
            signal.signal(s, h)
        if pauser.stopped:
            print(f"resumed {pauser.stopped}", flush=True)


def busy_processes(min_cpu: float = 20.0, window_s: float = 1.0) -> list[str]:
    """Other processes using ≥ min_cpu % of a core over the next ``window_s`` (sampled from /proc):
    the run's neighbours, for the record. Stopped (paused) processes show 0."""
    def sample() -> dict[int, tuple[int, str]]:
        ticks = {}
        for stat in Path("/proc").glob("[0-9]*/stat"):
            with contextlib.suppress(OSError, ValueError, IndexError):
                text = stat.read_text()
                name = text[text.index("(") + 1:text.rindex(")")]
                fields = text[text.rindex(")") + 2:].split()
                ticks[int(stat.parent.name)] = (int(fields[11]) + int(fields[12]), name)
        return ticks

    if not Path("/proc/self/stat").exists():
        return []
    hz = os.sysconf("SC_CLK_TCK")
    before = sample()
    time.sleep(window_s)
    after = sample()
    busy = []
    for pid, (t1, name) in after.items():
        if pid == os.getpid() or pid not in before:
            continue
        pct = 100.0 * (t1 - before[pid][0]) / hz / window_s
        if pct >= min_cpu:
            busy.append(f"{pid} {name} {pct:.0f}%")
    return busy


def _matches(busy_entry: str, pattern: str) -> bool:
    """Whether the process of a busy_processes() entry ("pid name pct%") has a command line matching pattern."""
    try:
        cmdline = Path(f"/proc/{busy_entry.split()[0]}/cmdline").read_bytes().replace(b"\0", b" ").decode()
    except OSError:
        return False
    return re.search(pattern, cmdline) is not None


# ------------------------------------------------------------------------------------ variants

class Variant:
    """Something that turns a uint8 driving frame into an output frame, per-frame work only."""

    name = "variant"
    backend = precision = ""

    def setup(self, loaded, source: np.ndarray) -> None: ...

    def frame(self, driving: np.ndarray) -> np.ndarray:
        """(S,S,3) uint8 driving frame → (S,S,3) float output in [0,1]."""
        raise NotImplementedError

    def large_motion(self, kp_driving: np.ndarray) -> np.ndarray:
        """Generator only, for given driving keypoints (K,2) → (S,S,3) float output."""
        raise NotImplementedError


class OfficialBaseline(Variant):
    """The official demo's per-frame work: kp_detector + TPSMM.animate, torch fp32 eager, uncached."""

    name, backend, precision = "baseline", "torch-eager-uncached (official demo)", "fp32"

    def setup(self, loaded, source):
        import torch

        self.torch = torch
        self.model = loaded.model.eval()
        self.source = self.to_nchw(source)
        with torch.inference_mode():
            self.kp_source = self.model.kp_detector(self.source)

    def to_nchw(self, image: np.ndarray):
        """(S,S,3) uint8 → contiguous (1,3,S,S) float32 (a permuted view would run the whole network in
        channels_last float32, an order of magnitude slower on CPU: the baseline gets the fast layout)."""
        return self.torch.from_numpy(np.ascontiguousarray(image.transpose(2, 0, 1)))[None].float() / 255.0

    def frame(self, driving):
        torch = self.torch
        with torch.inference_mode():
            kp = self.model.kp_detector(self.to_nchw(driving))
            out = self.model.animate(self.source, self.kp_source, kp)
        return out[0].permute(1, 2, 0).numpy()

    def large_motion(self, kp_driving):
        torch = self.torch
        with torch.inference_mode():
            out = self.model.animate(self.source, self.kp_source, torch.from_numpy(kp_driving)[None])
        return out[0].permute(1, 2, 0).numpy()


class BackendVariant(Variant):
    """A splinecam backend through the Backend interface: keypoints + generate per frame."""

    def __init__(self, name: str, factory: Callable[[object], object], backend: str, precision: str):
        self.name, self.factory, self.backend, self.precision = name, factory, backend, precision

    def setup(self, loaded, source):
        self.impl = self.factory(loaded)
        self.state = self.impl.prepare_source(source)

    def frame(self, driving):
        kp = self.impl.keypoints(driving)
        return self.impl.generate(self.state, kp).astype(np.float32) / 255.0

    def large_motion(self, kp_driving):
        return self.impl.generate(self.state, kp_driving).astype(np.float32) / 255.0


def make_variant(name: str, threads: int) -> Variant:
    """Variants by name: torch-fp32, torch-bf16, torch-bf16-compiled, torch-fp32-compiled,
    onnxruntime-fp32, onnxruntime-fp16."""
    from splinecam.engines.backends import Backend, BackendOptions

    def torch_backend(precision):
        def make(loaded):
            from splinecam.engines.backends.torch_runner import TorchGraphs
            return Backend.for_model(loaded, TorchGraphs(loaded, "cpu", precision, BackendOptions()))
        return make

    def compiled(precision):
        def make(loaded):
            from splinecam.engines.backends.torch_compiled import CompiledTorchGraphs
            return Backend.for_model(loaded, CompiledTorchGraphs(loaded, "cpu", precision, BackendOptions()))
        return make

    def ort(precision):
        def make(loaded):
            from splinecam.engines.backends.onnxruntime_runner import OnnxRuntimeGraphs
            return Backend.for_model(loaded, OnnxRuntimeGraphs(loaded, "cpu", precision, BackendOptions(threads=threads)))
        return make

    table = {
        "torch-fp32": (torch_backend("fp32"), "torch (cached source)", "fp32"),
        "torch-bf16": (torch_backend("bf16"), "torch (cached source, autocast + channels_last)", "bf16"),
        "torch-bf16-compiled": (compiled("bf16"), "torch compiled (cached source, inductor, frozen, channels_last)", "bf16"),
        "torch-fp32-compiled": (compiled("fp32"), "torch compiled (cached source, inductor, frozen, channels_last)", "fp32"),
        "onnxruntime-fp32": (ort("fp32"), "onnxruntime CPU EP (cached source)", "fp32"),
        "onnxruntime-fp16": (ort("fp16"), "onnxruntime CPU EP (cached source)", "fp16"),
    }
    if name not in table:
        raise SystemExit(f"unknown variant {name!r}: choose from {', '.join(table)}")
    factory, backend, precision = table[name]
    return BackendVariant(name, factory, backend, precision)


# ------------------------------------------------------------------------------------ measurement

@dataclass
class VariantResult:
    """Per-frame times (ms) of one variant and its quality against the fp32 baseline."""

    name: str
    backend: str
    precision: str
    setup_s: float
    ms: list[float] = field(default_factory=list)
    psnr_db: list[float] = field(default_factory=list)
    psnr_large_motion_db: float | None = None
    median_ms: float = 0.0
    mean_ms: float = 0.0
    speedup_vs_baseline: float | None = None
    meets_psnr_floor: bool | None = None


@dataclass
class SpeedReport:
    """One run: the baseline and every variant, measured interleaved, plus where it ran."""

    config: str
    seed: int
    threads: int
    image_size: int
    frames_per_round: int
    rounds: int
    results: dict[str, VariantResult]
    fastest: str | None
    fastest_speedup: float | None
    device: dict
    load_average_start: list[float]
    load_average_end: list[float]
    paused_pids: list[int]
    busy_processes_at_start: list[str]
    busy_processes_at_end: list[str]
    busy_processes_per_round: list[list[str]]
    started: str
    duration_s: float
    notes: list[str] = field(default_factory=list)


def measure_cpu_speed(config: str = "vox-256", seed: int = 0, rounds: int = 3,
                      variants: tuple[str, ...] = DEFAULT_VARIANTS, threads: int = 2,
                      progress: Callable[[str], None] = print, before_round: Callable[[], object] | None = None
                      ) -> SpeedReport:
    """Set every variant up, then time baseline and variants frame by frame, interleaved.

    ``before_round`` runs (untimed) before each frame of each round (e.g. :meth:`Pauser.refresh`)."""
    import torch

    from splinecam.engines.tpsmm.random_weights import perturbed_random_model

    torch.set_num_threads(threads)
    t_start = time.time()
    load_start = list(os.getloadavg())
    busy = busy_processes()
    loaded = perturbed_random_model(config, seed)
    source, driving = demo_frames()
    runners: list[Variant] = [OfficialBaseline()] + [make_variant(v, threads) for v in variants]
    results: dict[str, VariantResult] = {}
    for runner in runners:
        progress(f"setting up {runner.name} …")
        t0 = time.perf_counter()
        # each variant gets its own copy: a backend may change its model (dtype, memory format)
        runner.setup(copy.deepcopy(loaded), source)
        runner.frame(driving[0])  # warm-up, untimed
        results[runner.name] = VariantResult(runner.name, runner.backend, runner.precision, time.perf_counter() - t0)
    first_round: dict[str, list[tuple[int, np.ndarray]]] = {runner.name: [] for runner in runners}
    busy_rounds: list[list[str]] = []
    for r in range(rounds):
        for i, frame in enumerate(driving):
            if before_round:
                before_round()
            k = r * len(driving) + i
            order = runners[k % len(runners):] + runners[:k % len(runners)]
            for runner in order:
                ms, out = time_call(lambda: runner.frame(frame))
                results[runner.name].ms.append(ms)
                if r == 0:
                    first_round[runner.name].append((i, out))
        busy_rounds.append(busy_processes(window_s=0.5))
        progress(f"round {r + 1}/{rounds}: " + ", ".join(
            f"{n} {statistics.median(v.ms):.0f} ms" for n, v in results.items()))
    # quality: every variant's first-round outputs against the baseline's, plus one large motion
    reference = dict(first_round["baseline"])
    kp_large = _large_motion_keypoints(runners[0], seed)
    ref_large = runners[0].large_motion(kp_large)
    for runner in runners[1:]:
        res = results[runner.name]
        res.psnr_db = [psnr(out, reference[i]) for i, out in first_round[runner.name]]
        res.psnr_large_motion_db = psnr(runner.large_motion(kp_large), ref_large)
    base = statistics.median(results["baseline"].ms)
    for res in results.values():
        res.median_ms = statistics.median(res.ms)
        res.mean_ms = statistics.fmean(res.ms)
        res.speedup_vs_baseline = base / res.median_ms
        if res.name != "baseline":
            res.meets_psnr_floor = min(res.psnr_db + [res.psnr_large_motion_db]) >= PSNR_FLOOR_DB
    eligible = [r for r in results.values() if r.name != "baseline" and r.meets_psnr_floor]
    fastest = min(eligible, key=lambda r: r.median_ms) if eligible else None
    return SpeedReport(
        config=config, seed=seed, threads=threads, image_size=loaded.config.image_size,
        frames_per_round=len(driving), rounds=rounds, results=results,
        fastest=fastest.name if fastest else None, fastest_speedup=fastest.speedup_vs_baseline if fastest else None,
        device=cpu_description(), load_average_start=load_start, load_average_end=list(os.getloadavg()),
        paused_pids=[], busy_processes_at_start=busy, busy_processes_at_end=busy_processes(),
        busy_processes_per_round=busy_rounds,
        started=time.strftime("%Y-%m-%dT%H:%M:%S%z", time.localtime(t_start)), duration_s=time.time() - t_start)


def _large_motion_keypoints(baseline: OfficialBaseline, seed: int) -> np.ndarray:
    """Source keypoints moved by a smooth random motion (≈0.1 of the frame), (K,2) float32."""
    kp = baseline.kp_source[0].numpy()
    rng = np.random.default_rng(seed)
    shift = rng.normal(0, 0.05, size=(1, 2)) + rng.normal(0, 0.03, size=kp.shape)
    return np.clip(kp * (1 + rng.normal(0, 0.05)) + shift, -1, 1).astype(np.float32)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--config", default="vox-256")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--variants", default=",".join(DEFAULT_VARIANTS))
    parser.add_argument("--out", default=str(REPO / "benchmarks" / "results" / "cpu_speed.json"))
    parser.add_argument("--wait-quiet", type=float, default=0, metavar="S",
                        help="first wait up to S seconds until no other process uses ≥ 20%% of a core")
    parser.add_argument("--pause-training", action="store_true",
                        help=f"SIGSTOP processes matching {TRAINING_PATTERN!r} during the run (always resumed)")
    args = parser.parse_args(argv)
    with benchmark_lock():
        deadline = time.time() + args.wait_quiet
        while args.wait_quiet and time.time() < deadline:
            busy = [b for b in busy_processes() if not (args.pause_training and _matches(b, TRAINING_PATTERN))]
            if not busy:
                break
            print(f"waiting for a quiet CPU: {', '.join(busy)}", flush=True)
            time.sleep(10)
        with _paused(TRAINING_PATTERN if args.pause_training else None) as pauser:
            report = measure_cpu_speed(args.config, args.seed, args.rounds,
                                       tuple(v for v in args.variants.split(",") if v), args.threads,
                                       before_round=pauser.refresh)
            report.paused_pids = list(pauser.stopped)
    out = Path(args.out)
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps(asdict(report), indent=2))
    print(f"\n{report.config} {report.image_size}², {report.threads} threads, {report.rounds}×{report.frames_per_round} "
          f"frames per variant, load {report.load_average_start[0]:.1f}→{report.load_average_end[0]:.1f}")
    for res in report.results.values():
        q = "" if res.name == "baseline" else (f"  PSNR {min(res.psnr_db):.1f}–{max(res.psnr_db):.1f} dB, "
                                               f"large motion {res.psnr_large_motion_db:.1f} dB")
        print(f"  {res.name:22s} {res.median_ms:8.0f} ms/frame  ×{res.speedup_vs_baseline:.2f}{q}")
    print(f"fastest ≥ {PSNR_FLOOR_DB:.0f} dB: {report.fastest} ×{report.fastest_speedup or 0:.2f}  → {out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
