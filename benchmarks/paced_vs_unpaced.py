"""`splinecam demo` unpaced and `--realtime`, alternated N times: the loop's cost of pacing (issue #12).

    python -m splinecam.benchmarks.paced_vs_unpaced --runs 4 --json benchmarks/results/CPU-paced-vs-unpaced.json
        [-- demo flags, e.g. --backend openvino --precision fp32]

One run of each mode is too noisy to compare on a shared machine (a single pair has shown the paced
generate anywhere from 25 % faster to 30 % slower): this runs the bundled demo (defaults: 1280×720, the
recorder on) ``--runs`` times in each mode, alternating, reads each run's ``--metrics`` JSON and reports
the medians: generate ms per frame, processed fps, latency p95, camera frames dropped — and the ratios
the issue asks for (paced generate vs unpaced; paced fps vs unpaced or the clip's own rate).
"""

from __future__ import annotations

import argparse
import json
import statistics
import subprocess
import sys
import tempfile
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path


@dataclass
class ModeRuns:
    """Every run of one mode, and their medians."""

    generate_ms: list[float] = field(default_factory=list)
    fps: list[float] = field(default_factory=list)
    p95_ms: list[float] = field(default_factory=list)
    dropped: list[int] = field(default_factory=list)
    captured: list[int] = field(default_factory=list)
    backend: str = ""

    def add(self, metrics: dict) -> None:
        self.generate_ms.append(float(metrics["stages_ms"]["generate"]))
        self.fps.append(float(metrics["fps"]["processed"]))
        self.p95_ms.append(float(metrics["latency_ms"]["p95"]))
        self.dropped.append(int(metrics["frames"]["dropped"]))
        self.captured.append(int(metrics["frames"]["captured"]))
        self.backend = f"{metrics['backend']}/{metrics['device']}/{metrics['precision']}"

    def median(self, name: str) -> float:
        return float(statistics.median(getattr(self, name)))


def run_demo(paced: bool, flags: list[str], tmp: Path) -> dict:
    metrics = tmp / "metrics.json"
    cmd = [sys.executable, "-m", "splinecam.cli", "demo", "--out", str(tmp / "demo.mp4"), "--metrics", str(metrics),
           *(["--realtime"] if paced else []), *flags]
    done = subprocess.run(cmd, capture_output=True, text=True)
    if done.returncode != 0:
        raise SystemExit(f"splinecam demo failed: {(done.stderr or done.stdout).strip()[-400:]}")
    return json.loads(metrics.read_text())


def main(argv: list[str] | None = None) -> int:
    from splinecam.engines.cpu import cpu_info

    argv = list(sys.argv[1:] if argv is None else argv)
    command = "python -m splinecam.benchmarks.paced_vs_unpaced " + " ".join(argv)
    demo_flags = argv[argv.index("--") + 1:] if "--" in argv else []
    argv = argv[:argv.index("--")] if "--" in argv else argv
    ap = argparse.ArgumentParser(prog="python -m splinecam.benchmarks.paced_vs_unpaced",
                                 description=__doc__.split("\n")[0])
    ap.add_argument("--runs", type=int, default=4, help="runs of each mode (default 4)")
    ap.add_argument("--json", type=Path, help="write every run and the medians here")
    args = ap.parse_args(argv)
    modes = {"unpaced": ModeRuns(), "paced": ModeRuns()}
    with tempfile.TemporaryDirectory(prefix="splinecam-paced-") as tmp:
        for i in range(args.runs):
            for name, mode in modes.items():
                mode.add(run_demo(name == "paced", demo_flags, Path(tmp)))
                print(f"run {i + 1}/{args.runs} {name}: generate {mode.generate_ms[-1]:.1f} ms, "
                      f"{mode.fps[-1]:.2f} fps, p95 {mode.p95_ms[-1]:.0f} ms, {mode.dropped[-1]} dropped", flush=True)
    u, p = modes["unpaced"], modes["paced"]
    result = {
        "cpu": cpu_info().model, "isa": cpu_info().isa, "isa_cap": cpu_info().cap, "when": time.strftime("%Y-%m-%dT%H:%M"),
        "command": command,
        "demo_flags": demo_flags, "runs": args.runs, "backend": p.backend,
        "medians": {name: {k: m.median(k) for k in ("generate_ms", "fps", "p95_ms", "dropped")}
                    for name, m in modes.items()},
        "paced_generate_vs_unpaced": p.median("generate_ms") / u.median("generate_ms"),
        "paced_fps_vs_unpaced": p.median("fps") / u.median("fps"),
        "paced_dropped_share": sum(p.dropped) / max(1, sum(p.captured)),
        "all_runs": {name: asdict(m) for name, m in modes.items()},
    }
    print(f"{result['cpu']} ({p.backend}), medians of {args.runs}: generate {u.median('generate_ms'):.1f} ms unpaced, "
          f"{p.median('generate_ms'):.1f} ms paced ({100 * (result['paced_generate_vs_unpaced'] - 1):+.0f} %); "
          f"{u.median('fps'):.1f} fps unpaced, {p.median('fps'):.2f} paced; p95 {u.median('p95_ms'):.0f} / "
          f"{p.median('p95_ms'):.0f} ms; paced dropped {100 * result['paced_dropped_share']:.1f} % of camera frames")
    if args.json:
        args.json.parent.mkdir(parents=True, exist_ok=True)
        args.json.write_text(json.dumps(result, indent=1))
        print(f"wrote {args.json}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
