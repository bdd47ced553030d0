"""Tables from bench JSON: the terminal table of one run, and the README table of all kept runs.

    python -m splinecam.benchmarks.report            # rewrite the table in benchmarks/README.md from benchmarks/results/*.json
    python -m splinecam.benchmarks.report b.json     # print one run's table

Only files with the ``splinecam-bench/1`` schema are read (other benchmark files in results/ are
left alone). The README table sits between ``<!-- bench-table:start -->`` and
``<!-- bench-table:end -->``; everything else in the README is kept as written.
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

HERE = Path(__file__).resolve().parent
RESULTS_DIR = HERE / "results"
README = HERE / "README.md"
START, END = "<!-- bench-table:start -->", "<!-- bench-table:end -->"


def _f(value, fmt: str, none: str = "–") -> str:
    return none if value is None else format(value, fmt)


def row_label(row: dict) -> str:
    if row.get("baseline"):
        return "baseline: official demo"
    compiled = " (compiled)" if "compiled" in (row.get("variant") or "") else ""
    return f"{row['backend']} {row['precision']}{compiled}"


def format_table(data: dict) -> str:
    """One run as a fixed-width text table (ms/frame, fps, speed-up, PSNR, stages)."""
    lines = []
    model = data.get("model") or {}
    dev = data.get("device") or {}
    where = dev.get("gpu_name") or f"{dev.get('cpu_model')} ({dev.get('cpu_cores_logical')} cores)"
    if model:
        lines.append(f"{model.get('config')} ({model.get('source')}), {model.get('gflops_per_frame')} GFLOPs/frame "
                     f"official, {model.get('gflops_per_frame_cached')} cached; {where}, "
                     f"{(data.get('settings') or {}).get('threads')} threads")
    results = data.get("results") or []
    if results:
        head = (f"{'row':28s} {'device':6s} {'ms/frame':>9s} {'p90':>8s} {'fps':>7s} {'×base':>6s} {'PSNR dB':>8s} "
                f"{'PSNR lm':>8s}  stages (ms)")
        lines += [head, "-" * len(head)]
        foot = "PSNR dB: vs the baseline's fp32 frames (mean); PSNR lm: one frame under a large keypoint motion"
        for r in results:
            if r.get("status") != "ok":
                lines.append(f"{row_label(r):28s} {r.get('device', ''):6s} {r.get('status')}: {r.get('reason')}")
                continue
            stages = " ".join(f"{k} {v:.1f}" for k, v in (r.get("stages_ms") or {}).items())
            psnr = "fp32" if r.get("psnr_vs_fp32") is None else f"{r['psnr_vs_fp32']:.1f}"
            lm = "" if r.get("psnr_large_motion_vs_fp32") is None else f"{r['psnr_large_motion_vs_fp32']:.1f}"
            lines.append(f"{row_label(r):28s} {r.get('device', ''):6s} {_f(r.get('ms_per_frame_median'), '9.1f')} "
                         f"{_f(r.get('ms_per_frame_p90'), '8.1f')} {_f(r.get('fps'), '7.2f')} "
                         f"{_f(r.get('speedup_vs_baseline'), '6.2f')} {psnr:>8s} {lm:>8s}  {stages}")
        lines.append(foot)
        fastest = data.get("fastest")
        if fastest:
            lines.append(f"fastest at ≥ {fastest['psnr_floor_db']:.0f} dB PSNR on every frame: {fastest['row']} "
                         f"×{_f(fastest.get('speedup_vs_baseline'), '.2f')} the official demo")
    for p in data.get("pipeline") or []:
        if p.get("status") != "ok":
            lines.append(f"pipeline {p.get('backend')} {p.get('precision')}: {p.get('status')}: {p.get('reason')}")
            continue
        lat, fr = p.get("latency_ms") or {}, p.get("frames") or {}
        stages = " ".join(f"{k} {v:.1f}" for k, v in (p.get("stages_ms") or {}).items())
        lines.append(f"pipeline ({p.get('variant') or p.get('backend')}, {p.get('clip')}, "
                     f"{'paced like a camera' if p.get('paced') else 'unpaced'}, out {p.get('output_size')}): "
                     f"{_f(p.get('fps_processed'), '.2f')} fps processed, {_f(p.get('fps_output'), '.2f')} sent; "
                     f"latency p50 {_f(lat.get('p50'), '.0f')} ms, p95 {_f(lat.get('p95'), '.0f')} ms; "
                     f"{fr.get('processed')} of {fr.get('captured')} frames processed, {fr.get('dropped')} dropped, "
                     f"{fr.get('no_face')} without a face")
        lines.append(f"  stages (ms/frame): {stages}")
        r = p.get("remote")
        if r:
            rt, net, b = r.get("round_trip_ms") or {}, r.get("network_ms") or {}, r.get("bytes_per_frame") or {}
            lines.append(f"  remote {r.get('worker')} ({r.get('worker_backend')}, keypoints on the "
                         f"{r.get('keypoints_on')}, frames as {r.get('frames_as')}): round trip per frame mean "
                         f"{_f(rt.get('mean'), '.1f')} ms = network {_f(net.get('mean'), '.1f')} + worker "
                         f"{_f(r.get('worker_ms'), '.1f')} (inference {_f(r.get('inference_ms'), '.1f')}); "
                         f"p50 {_f(rt.get('p50'), '.1f')}, p95 {_f(rt.get('p95'), '.1f')} ms; "
                         f"{_f(b.get('sent'), '.0f')} B sent, {_f(b.get('received'), '.0f')} B received per frame; "
                         f"{r.get('frames_generated')} frames generated by the worker")
    return "\n".join(lines)


# ----------------------------------------------------------------------------- README table


def bench_files(directory: Path = RESULTS_DIR) -> list[tuple[Path, dict]]:
    from splinecam.benchmarks.results import SCHEMA

    out = []
    for path in sorted(directory.glob("*.json")):
        try:
            data = json.loads(path.read_text())
        except (OSError, ValueError):
            continue
        if isinstance(data, dict) and data.get("schema") == SCHEMA:
            out.append((path, data))
    return out


def device_label(dev: dict) -> str:
    if dev.get("gpu_name"):
        cc = f", cc {dev['compute_capability']}" if dev.get("compute_capability") else ""
        return f"{dev['gpu_name']}{cc}"
    flags = dev.get("cpu_flags") or []
    names = {"amx": "AMX", "avx512_bf16": "AVX-512 bf16", "avx512": "AVX-512", "avx2": "AVX2", "baseline": ""}
    isa = names.get(dev.get("cpu_isa") or "") if dev.get("cpu_isa") else (
        "AMX" if "amx_bf16" in flags else ("AVX-512" if "avx512f" in flags else ("AVX2" if "avx2" in flags else "")))
    if dev.get("cpu_isa_cap"):
        isa += f" stand-in ({dev['cpu_isa_cap']})"
    return f"{dev.get('cpu_model') or 'CPU'}{', ' + isa if isa else ''}"


def weights_label(model: dict) -> str:
    """config plus where the weights came from: random / bundled / a checkpoint file name."""
    source = model.get("source") or ""
    tag = ("random weights" if source.startswith("random") else
           "bundled weights" if source.startswith("bundled") else Path(source.split(" ", 1)[-1]).name)
    return f"{model.get('config')} ({tag})"


def readme_table(files: list[tuple[Path, dict]]) -> str:
    """Markdown: a table of the measured rows of every kept run (unavailable rows omitted), a
    table of the live-pipeline runs, and the list of runs (command, model, inputs, note)."""
    lines = ["| device | threads | model | GFLOPs/frame | backend | precision | ms/frame (median) | fps "
             "| × official demo | PSNR vs fp32 (dB): frames / large motion | run |",
             "|---|---|---|---|---|---|---|---|---|---|---|"]
    pipes = ["| device | threads | model | backend | camera clip | pacing | output | fps (processed) "
             "| latency p50 / p95 (ms) | frames processed / dropped | run |",
             "|---|---|---|---|---|---|---|---|---|---|---|"]
    remotes = ["| client device | worker (backend) | model (weights) | keypoints on | frames as | fps (processed) "
               "| round trip / frame (ms): mean = network + worker (inference) | bytes / frame up / down | run |",
               "|---|---|---|---|---|---|---|---|---|"]
    for path, data in files:
        dev, model, settings = data.get("device") or {}, data.get("model") or {}, data.get("settings") or {}
        link = f"[{path.name}](results/{path.name})"
        for r in data.get("results") or []:
            if r.get("status") != "ok":
                continue
            name = "official demo (baseline)" if r.get("baseline") else r["backend"]
            if "compiled" in (r.get("variant") or ""):
                name += " (compiled)"
            psnr = "fp32" if r.get("psnr_vs_fp32") is None else f"{r['psnr_vs_fp32']:.1f}"
            if r.get("psnr_large_motion_vs_fp32") is not None:
                psnr += f" / {r['psnr_large_motion_vs_fp32']:.1f}"
            lines.append(f"| {device_label(dev)} | {settings.get('threads')} | {weights_label(model)} | "
                         f"{_f(model.get('gflops_per_frame'), '.1f')} | {name} | {r['precision']} | "
                         f"{r['ms_per_frame_median']:.0f} | {r['fps']:.2f} | {r['speedup_vs_baseline']:.2f} | {psnr} | "
                         f"{link} |")
        for p in data.get("pipeline") or []:
            if p.get("status") != "ok":
                continue
            lat, fr = p.get("latency_ms") or {}, p.get("frames") or {}
            r = p.get("remote")
            if r:
                rt, net, b = r.get("round_trip_ms") or {}, r.get("network_ms") or {}, r.get("bytes_per_frame") or {}
                remotes.append(f"| {device_label(dev)} | {r.get('worker')} ({r.get('worker_backend')}) | "
                               f"{r.get('model')} ({r.get('weights') or '?'}) | {r.get('keypoints_on')} | "
                               f"{r.get('frames_as')} | {_f(p.get('fps_processed'), '.2f')} | "
                               f"{_f(rt.get('mean'), '.1f')} = {_f(net.get('mean'), '.1f')} + "
                               f"{_f(r.get('worker_ms'), '.1f')} ({_f(r.get('inference_ms'), '.1f')}) | "
                               f"{_f(b.get('sent'), '.0f')} / {_f(b.get('received'), '.0f')} | {link} |")
                continue
            pipes.append(f"| {device_label(dev)} | {settings.get('threads')} | {weights_label(model)} | "
                         f"{p.get('variant') or p.get('backend')} | {p.get('clip')} | "
                         f"{'like a camera' if p.get('paced') else 'unpaced'} | {p.get('output_size')} | "
                         f"{_f(p.get('fps_processed'), '.2f')} | {_f(lat.get('p50'), '.0f')} / {_f(lat.get('p95'), '.0f')} | "
                         f"{fr.get('processed')} / {fr.get('dropped')} | {link} |")
    out = lines
    if len(pipes) > 2:
        out += ["", "Live pipeline (`--pipeline`):", ""] + pipes
    if len(remotes) > 2:
        out += ["", "Networks on a worker (`--pipeline CLIP --remote HOST:PORT`):", ""] + remotes
    if files:
        out += ["", "Runs:", ""]
    for path, data in files:
        note = f" — {data['note']}" if data.get("note") else ""
        inputs = (data.get("inputs") or {}).get("description", "")
        source = (data.get("model") or {}).get("source")
        remote = next((p["remote"] for p in data.get("pipeline") or [] if p.get("remote")), None)
        if source is None and remote:
            source = f"the worker's, {remote.get('model')} ({remote.get('weights') or '?'})"
        out.append(f"- [{path.name}](results/{path.name}) ({(data.get('created') or '')[:16]}): "
                   f"`{data.get('command') or 'splinecam bench'}`; model: {source}; "
                   f"inputs: {inputs}{note}")
    return "\n".join(out)


def update_readme(readme: Path = README, directory: Path = RESULTS_DIR) -> str:
    """Rewrite the table between the markers of ``readme`` from ``directory``; returns the table."""
    table = readme_table(bench_files(directory))
    text = readme.read_text() if readme.exists() else f"# Benchmarks\n\n{START}\n{END}\n"
    if START not in text or END not in text:
        text = text.rstrip() + f"\n\n{START}\n{END}\n"
    pre, rest = text.split(START, 1)
    _, post = rest.split(END, 1)
    readme.write_text(f"{pre}{START}\n{table}\n{END}{post}")
    return table


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(prog="python -m splinecam.benchmarks.report", description=__doc__.split("\n\n")[0])
    ap.add_argument("json", nargs="*", help="print these runs' tables instead of rewriting the README")
    ap.add_argument("--results", type=Path, default=RESULTS_DIR, help="folder of kept runs (default benchmarks/results)")
    ap.add_argument("--readme", type=Path, default=README)
    args = ap.parse_args(argv)
    if args.json:
        from splinecam.benchmarks.results import load_result

        for path in args.json:
            print(f"{path}:\n{format_table(load_result(path))}\n")
        return 0
    table = update_readme(args.readme, args.results)
    print(table)
    print(f"wrote {args.readme}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
