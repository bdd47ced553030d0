"""``--plot OUT.png``: a chart of one bench run (matplotlib, Agg backend: no display needed).

Left: frames per second of each measured row (speed-up over the official demo and PSNR against
float32 written on the bar). Right: where each row's milliseconds go, stage by stage.
Unavailable / failed rows are listed under the chart with their reason.
"""

from __future__ import annotations

from pathlib import Path

from splinecam.engines.errors import SplinecamError

STAGE_COLOURS = {"keypoints": "#4c72b0", "normalise": "#dd8452", "generate": "#55a868", "dense_motion": "#8172b3",
                 "inpainting": "#c44e52"}


def plot_result(data: dict, out: str | Path) -> Path:
    """Write the PNG chart of a bench result (its JSON dict form); returns the path."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    from splinecam.benchmarks.report import _f, device_label, row_label

    rows = [r for r in data.get("results") or [] if r.get("status") == "ok"]
    skipped = [r for r in data.get("results") or [] if r.get("status") != "ok"]
    pipes = [p for p in data.get("pipeline") or [] if p.get("status") == "ok"]
    model = data.get("model") or {}
    title = f"splinecam bench — {model.get('config', '?')} on {device_label(data.get('device') or {})}, " \
            f"{(data.get('settings') or {}).get('threads')} threads"
    out = Path(out)
    if pipes and not rows:
        fig, ax = plt.subplots(figsize=(9, 1.6 + 0.7 * len(pipes)))
        labels = [f"{p.get('variant') or p.get('backend')}" for p in pipes]
        fps = [p.get("fps_processed") or 0 for p in pipes]
        bars = ax.barh(labels, fps, color="#4c72b0")
        for bar, p in zip(bars, pipes):
            lat = p.get("latency_ms") or {}
            ax.text(bar.get_width(), bar.get_y() + bar.get_height() / 2,
                    f"  {bar.get_width():.2f} fps, latency p50 {_f(lat.get('p50'), '.0f')} / p95 {_f(lat.get('p95'), '.0f')} ms",
                    va="center", fontsize=8)
        ax.set_xlabel("frames per second (live pipeline, processed)")
        ax.set_xlim(0, max(fps + [1]) * 1.9)
        ax.set_title(title + f"\nlive pipeline on {pipes[0].get('clip')}", fontsize=9)
    else:
        if not rows:
            raise SplinecamError("nothing to plot: no row of this run was measured")
        labels = [row_label(r) for r in rows][::-1]
        rows = rows[::-1]
        fig, (ax1, ax2) = plt.subplots(1, 2, figsize=(13, 1.8 + 0.55 * len(rows) + 0.2 * len(skipped)),
                                       gridspec_kw={"width_ratios": [1.1, 1]})
        fps = [r["fps"] for r in rows]
        colours = ["#999999" if r.get("baseline") else "#4c72b0" for r in rows]
        bars = ax1.barh(labels, fps, color=colours)
        for bar, r in zip(bars, rows):
            psnr = "" if r.get("psnr_vs_fp32") is None else f", {r['psnr_vs_fp32']:.1f} dB"
            ax1.text(bar.get_width(), bar.get_y() + bar.get_height() / 2,
                     f"  {r['fps']:.2f} fps ×{r['speedup_vs_baseline']:.2f}{psnr}", va="center", fontsize=8)
        ax1.set_xlim(0, max(fps) * 1.6)
        ax1.set_xlabel("frames per second (median frame; every frame computed)")
        ax1.set_title("speed (× official demo, PSNR vs fp32)", fontsize=9)
        stages = []
        for r in rows:
            for k in r.get("stages_ms") or {}:
                if k not in stages:
                    stages.append(k)
        left = [0.0] * len(rows)
        for k in stages:
            vals = [(r.get("stages_ms") or {}).get(k, 0.0) for r in rows]
            ax2.barh(labels, vals, left=left, label=k, color=STAGE_COLOURS.get(k))
            left = [a + b for a, b in zip(left, vals)]
        ax2.set_xlabel("ms per frame, by stage (means)")
        ax2.set_yticklabels([])
        ax2.legend(fontsize=7, loc="lower right")
        ax2.set_title("where the time goes", fontsize=9)
        fig.suptitle(title, fontsize=10)
        bottom = 0.0
        if skipped:
            text = "\n".join(f"{row_label(r)}: {r.get('status')} — {(r.get('reason') or '')[:140]}" for r in skipped)
            fig.text(0.01, 0.01, text, fontsize=6.5, va="bottom", family="monospace")
            bottom = (0.16 * len(skipped) + 0.1) / fig.get_size_inches()[1]
        fig.tight_layout(rect=(0, bottom, 1, 0.95))
    try:
        out.parent.mkdir(parents=True, exist_ok=True)
        if pipes and not rows:
            fig.tight_layout()
        fig.savefig(out, dpi=110)
    except OSError as err:
        raise SplinecamError(f"cannot write --plot {out}: {err.strerror or err}") from None
    finally:
        plt.close(fig)
    return out
