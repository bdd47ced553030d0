"""``--backend auto`` on a CPU, measured: time the candidates on this machine once, remember the winner.

Which CPU runtime is fastest depends on the CPU (AVX2 / AVX-512 / bf16 / AMX), the runtime versions and
the model: measured, never assumed. The first time a model runs with ``auto`` on a CPU, every candidate
the registry lists and this machine can run (:func:`candidates`) is built and timed on the model it will
run — generator calls on the avatar it will animate (or a neutral image) with keypoints moving as a face
moves, the candidates interleaved so that a burst of other work cannot decide (:func:`measure`) — and
each reduced precision's output is compared with float32 (PSNR on the
same frames). The fastest candidate at ≥ 35 dB wins. The table is stored (:func:`choice_path`) under a
key of everything that decides it: CPU model and usable ISA flags, thread count, model hash, the
versions of splinecam's runtimes; later starts read it (milliseconds) and say what was picked and why.
``--retune`` measures again.

Engines that compile (torch inductor: a minute on a small CPU) are not candidates of the timing round:
their first build would dominate start-up. They stay one explicit flag away (``--backend torch``).
"""

from __future__ import annotations

import hashlib
import json
import math
import os
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Callable

import numpy as np

from splinecam.engines.backends.options import BackendOptions
from splinecam.engines.loaded_model import LoadedModel
from splinecam.engines.quality import PSNR_FLOOR_DB, mean_psnr

MIN_PSNR_DB = PSNR_FLOOR_DB  # engines/quality.py: the one floor
TIMED_CALLS = 8  # motion frames: each candidate runs them all once (warm-up, and the outputs compared)
ROUNDS = 4  # interleaved timing rounds (see measure)
CALLS_PER_ROUND = 4
FORMAT = 1


@dataclass
class Trial:
    """One candidate's measurement: median ms per generator call, PSNR vs float32 (None for float32 itself)."""

    engine: str
    precision: str
    ms: float | None = None
    psnr_db: float | None = None
    error: str | None = None

    @property
    def label(self) -> str:
        return f"{self.engine} {self.precision}"


@dataclass
class AutoChoice:
    """The measured winner for one machine + model + runtimes, and every trial behind it."""

    engine: str
    precision: str
    key: dict
    trials: list[Trial] = field(default_factory=list)
    measured_at: float = 0.0

    def explain(self) -> str:
        """One line: what auto picked and why (the measured alternatives)."""
        won = next((t for t in self.trials if (t.engine, t.precision) == (self.engine, self.precision)), None)
        others = ", ".join(f"{t.label} {t.ms:.1f} ms" + (f" ({t.psnr_db:.0f} dB)" if t.psnr_db else "")
                           for t in self.trials if t is not won and t.ms is not None)
        refused = ", ".join(f"{t.label} below {MIN_PSNR_DB:.0f} dB ({t.psnr_db:.1f})" for t in self.trials
                            if t.ms is not None and t.psnr_db is not None and t.psnr_db < MIN_PSNR_DB)
        line = f"auto: {self.engine} {self.precision}"
        if won is not None and won.ms is not None:
            line += f", {won.ms:.1f} ms per frame measured on this CPU"
        if others:
            line += f" (also measured: {others})"
        if refused:
            line += f"; not eligible: {refused}"
        return line

    def to_json(self) -> dict:
        return {"format": FORMAT, "engine": self.engine, "precision": self.precision, "key": self.key,
                "trials": [asdict(t) for t in self.trials], "measured_at": self.measured_at}

    @classmethod
    def from_json(cls, data: dict) -> "AutoChoice":
        if not isinstance(data, dict) or data.get("format") != FORMAT:
            raise ValueError("not an auto choice of this format")
        return cls(str(data["engine"]), str(data["precision"]), dict(data["key"]),
                   [Trial(**t) for t in data["trials"]], float(data.get("measured_at", 0.0)))


def candidates() -> list[tuple[str, str]]:
    """(engine, precision) rows the registry lists for the CPU that this machine can run, float32 first;
    compiling engines excluded (see the module docstring)."""
    from splinecam.engines.backends.registry import ROWS

    out = []
    for row in ROWS:
        if row.engine == "torch" or "cpu" not in row.precisions:
            continue
        for precision in row.precisions["cpu"]:
            if row.requirement("cpu", precision) is None:
                out.append((row.engine, precision))
    return sorted(out, key=lambda c: c[1] != "fp32")


def int8_ready(loaded: LoadedModel) -> bool:
    """``loaded``'s int8 graphs are cached (no calibration to run first)."""
    from splinecam.engines.backends.onnxruntime_runner import int8_export_ready

    return int8_export_ready(loaded)


def timed_candidates(loaded: LoadedModel) -> list[tuple[str, str]]:
    """The :func:`candidates` the timing round builds: int8 only once ``loaded``'s int8 graphs are cached
    (calibrating and quantizing them takes a minute or more, like compiling; ``splinecam export --precision
    int8`` or ``splinecam bench`` makes them)."""
    found = candidates()
    if any(p == "int8" for _, p in found) and not int8_ready(loaded):
        found = [c for c in found if c[1] != "int8"]
    return found


def machine_key(loaded: LoadedModel, threads: int) -> dict:
    """Everything the winner depends on."""
    import platform

    from splinecam.engines.cpu import cpu_info

    from splinecam.engines.versions import installed_version, runtime_versions

    versions = {k: v for k, v in runtime_versions().items() if k in ("onnxruntime", "openvino")}
    cpu = cpu_info()
    return {"cpu": cpu.model, "isa": cpu.isa, "flags": list(cpu.flags), "threads": threads,
            "model_hash": loaded.model_hash, "python": platform.python_version(), "splinecam": installed_version(),
            **versions}


def choice_path(key: dict, root: Path | None = None) -> Path:
    from splinecam.engines.engine_cache import cache_root

    digest = hashlib.sha256(json.dumps(key, sort_keys=True).encode()).hexdigest()[:20]
    return (root or cache_root()) / "auto" / f"{key['model_hash'][:12]}-{digest}.json"


def talking_head_motion(kp: np.ndarray, n: int) -> list[np.ndarray]:
    """n driving keypoint sets moving as a talking head does: a small head rotation, nod and mouth opening.
    Keypoint rows with jacobians (FOMM's (K, 6)) turn their jacobians with the head."""
    out = []
    pos = kp[..., :2]
    c = pos.mean(axis=0)
    for i in range(n):
        a = 0.12 * math.sin(2 * math.pi * i / n)
        rot = np.array([[math.cos(a), -math.sin(a)], [math.sin(a), math.cos(a)]], np.float32)
        moved = (pos - c) @ rot.T + c + np.float32([0.03 * math.cos(2 * math.pi * i / n), 0.02 * math.sin(4 * math.pi * i / n)])
        if kp.shape[-1] > 2:
            row = kp.copy()
            row[..., :2] = moved
            row[..., 2:6] = (rot @ kp[..., 2:6].reshape(-1, 2, 2)).reshape(-1, 4)
            moved = row
        out.append(moved.astype(np.float32))
    return out


def measure(loaded: LoadedModel, sample: np.ndarray, options: BackendOptions,
            say: Callable[[str], None] | None = None, clock: Callable[[], float] = time.perf_counter) -> AutoChoice:
    """Time every candidate on ``sample`` (S,S,3 uint8, the avatar) and pick the fastest at ≥ 35 dB.

    Every candidate is built and run on the motion frames first (its outputs are the ones compared with
    float32; these calls are its warm-up), then timed in ``ROUNDS`` interleaved rounds — each round
    times every candidate for ``CALLS_PER_ROUND`` calls, in a rotated order — and a candidate's figure
    is its best round's median. Another program's burst of work can only add time, and interleaving
    spreads it over all candidates instead of condemning the one it fell on: on a machine that was busy
    for the first seconds, timing the candidates one after the other once stored a choice 50 % slower
    than the best, for good."""
    from splinecam.engines.backends import create_backend

    say = say or (lambda _m: None)
    threads = options.threads or (os.cpu_count() or 1)
    trials: list[Trial] = []
    built: list[tuple[Trial, object, object]] = []
    reference: list[np.ndarray] | None = None
    kp_frames = None
    try:
        for engine, precision in timed_candidates(loaded):
            trial = Trial(engine, precision)
            trials.append(trial)
            say(f"auto: building {engine} {precision} …")
            backend = None
            try:
                backend = create_backend(loaded, engine, "cpu", precision, options)
                state = backend.prepare_source(sample)
                if kp_frames is None:
                    kp_frames = talking_head_motion(state.kp, TIMED_CALLS)
                outs = [backend.generate(state, kp) for kp in kp_frames]
            except Exception as exc:  # a candidate that cannot build or run is recorded, never fatal
                trial.error = _first_line(exc)
                if backend is not None:
                    backend.close()
                continue
            built.append((trial, backend, state))
            if precision == "fp32" and reference is None:
                reference = outs
            elif reference is not None:
                trial.psnr_db = round(mean_psnr(outs, reference), 1)
        if built:
            say(f"auto: timing {len(built)} candidates on this CPU, {ROUNDS} interleaved rounds …")
        rounds: dict[int, list[float]] = {id(t): [] for t, _, _ in built}
        for r in range(ROUNDS):
            for trial, backend, state in built[r % len(built):] + built[:r % len(built)]:
                if trial.error is not None:
                    continue
                times = []
                try:
                    for c in range(CALLS_PER_ROUND):
                        kp = kp_frames[(r * CALLS_PER_ROUND + c) % len(kp_frames)]
                        t0 = clock()
                        backend.generate(state, kp)
                        times.append((clock() - t0) * 1e3)
                except Exception as exc:
                    trial.error = _first_line(exc)
                    continue
                rounds[id(trial)].append(float(np.median(times)))
        for trial, _, _ in built:
            if trial.error is None and rounds[id(trial)]:
                trial.ms = round(min(rounds[id(trial)]), 2)
    finally:
        for _, backend, _ in built:
            backend.close()
    eligible = [t for t in trials if t.ms is not None and (t.precision == "fp32" or
                                                             (t.psnr_db is not None and t.psnr_db >= MIN_PSNR_DB))]
    if not eligible:
        raise RuntimeError("no CPU candidate could run: " + "; ".join(f"{t.label}: {t.error}" for t in trials))
    best = min(eligible, key=lambda t: t.ms)
    return AutoChoice(best.engine, best.precision, machine_key(loaded, threads), trials, time.time())


def _first_line(exc: Exception) -> str:
    return (str(exc).strip().splitlines() or [type(exc).__name__])[0][:200]


def choose(loaded: LoadedModel, sample: np.ndarray, options: BackendOptions, retune: bool = False,
           say: Callable[[str], None] | None = None, clock: Callable[[], float] = time.perf_counter) -> AutoChoice:
    """The remembered choice for this machine + model + runtimes, measuring it first when there is none
    (or ``retune``). A stored choice that cannot be read is measured again (with a message)."""
    say = say or options.say
    threads = options.threads or (os.cpu_count() or 1)
    key = machine_key(loaded, threads)
    path = choice_path(key)
    if not retune and path.is_file():
        try:
            choice = AutoChoice.from_json(json.loads(path.read_text()))
            if choice.key == key and (choice.engine, choice.precision) in candidates():  # not a stale / edited one
                return choice
        except (ValueError, KeyError, TypeError, OSError):
            say(f"auto: the remembered choice {path} is unreadable; measuring again")
    choice = measure(loaded, sample, options, say, clock)
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        tmp = path.with_name(path.name + ".tmp")
        tmp.write_text(json.dumps(choice.to_json(), indent=1))
        tmp.replace(path)
    except OSError as err:
        say(f"auto: could not remember the choice ({err}); it will be measured again next time")
    return choice
