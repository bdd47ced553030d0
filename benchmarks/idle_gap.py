"""Does a network call after an idle gap cost more than a back-to-back one, on this machine?

    python -m splinecam.benchmarks.idle_gap [--engine openvino] [--precision bf16] [--threads N ...]

A camera-paced loop calls the generator once per frame and waits in between; an unpaced one calls it
back-to-back. On a machine whose idle cores sleep deeply or are lent to others while idle (a shared
cloud VM), a multi-threaded call after a gap pays for waking its other threads' cores. This times the
bundled model's generator (the avatar live/assets/mona.jpg, keypoints moving as a face does) in three
ways, in interleaved rounds (median and 90th percentile of every call): back-to-back, after a 5 ms gap, after a 25 ms gap (one 25 fps frame minus
the rest of the loop), for each thread count given.

Measured on a 2-core AMD EPYC Zen 4 VM, OpenVINO: 2 threads 14–18 % slower after 25 ms idle than
back-to-back, 1 thread 6–8 %; but 1 thread is 40–60 % slower than 2 to begin with (fp32 13.1 vs 9.3 ms),
so a paced loop keeps every core for the networks (issue #12) and the helpers yield instead
(engines/priority.py). The idle-gap cost is the machine's (waking a core), not the loop's: it is why
`demo --realtime`'s generate can stay a little above the unpaced run's.
"""

from __future__ import annotations

import argparse
import time

import numpy as np

GAPS_S = (0.0, 0.005, 0.025)


def time_gaps(backend, state, kps: list[np.ndarray], calls: int, rounds: int) -> dict[float, tuple[float, float]]:
    """(median, 90th percentile) ms per call for each gap in GAPS_S, over ``rounds`` interleaved rounds
    of ``calls`` calls each (interleaved: a slow spell of the machine falls on every gap alike)."""
    times: dict[float, list[float]] = {g: [] for g in GAPS_S}
    for _ in range(rounds):
        for gap in GAPS_S:
            for i in range(calls):
                if gap:
                    time.sleep(gap)
                t0 = time.perf_counter()
                backend.generate(state, kps[i % len(kps)])
                times[gap].append((time.perf_counter() - t0) * 1e3)
    return {g: (float(np.median(t)), float(np.percentile(t, 90))) for g, t in times.items()}


def main(argv: list[str] | None = None) -> int:
    from pathlib import Path

    from splinecam.engines.backends import create_backend
    from splinecam.engines.backends.autotune import talking_head_motion
    from splinecam.engines.backends.options import BackendOptions
    from splinecam.engines.bundled import load_bundled
    from splinecam.engines.cpu import cpu_info
    from splinecam.engines.model_options import DEFAULT_WEIGHTS, avatar_sample
    from splinecam.benchmarks.pipeline import DEFAULT_AVATAR

    ap = argparse.ArgumentParser(prog="python -m splinecam.benchmarks.idle_gap", description=__doc__.split("\n")[0])
    ap.add_argument("--engine", default="openvino", help="a CPU engine (default openvino)")
    ap.add_argument("--precision", default="fp32")
    ap.add_argument("--threads", type=int, nargs="+", default=None, help="thread counts (default: 1 and every core)")
    ap.add_argument("--calls", type=int, default=30, help="calls per gap and round (default 30)")
    ap.add_argument("--rounds", type=int, default=5)
    args = ap.parse_args(argv)
    import os

    threads = args.threads or sorted({1, os.cpu_count() or 1})
    loaded = load_bundled(Path(DEFAULT_WEIGHTS))
    sample = avatar_sample(DEFAULT_AVATAR, loaded.config.image_size)
    print(f"{cpu_info().model}; {loaded.config.name}, {args.engine} {args.precision}; median ms per generator call")
    for n in threads:
        backend = create_backend(loaded, args.engine, "cpu", args.precision, BackendOptions(threads=n))
        try:
            state = backend.prepare_source(sample)
            kps = talking_head_motion(state.kp, 16)
            for kp in kps:
                backend.generate(state, kp)  # warm-up
            got = time_gaps(backend, state, kps, args.calls, args.rounds)
        finally:
            backend.close()
        base = got[0.0][0]
        print(f"  {n} thread{'s' if n > 1 else ''}: back-to-back {base:.2f} ms (p90 {got[0.0][1]:.2f}); " + "; ".join(
            f"after {g * 1e3:.0f} ms idle {ms:.2f} ms ({100 * (ms / base - 1):+.0f} %, p90 {p90:.2f})"
            for g, (ms, p90) in got.items() if g))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
