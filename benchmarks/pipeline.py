"""``splinecam bench --pipeline CLIP``: the whole live pipeline with a clip standing in for the camera.

Runs ``splinecam.live.pipeline.LivePipeline`` — capture thread, face tracking and crop, keypoints,
smoothing, relative normalisation, generator, composition to ``--output-size``, sinks — with no
virtual camera and no preview, and reports its own metrics (``live/metrics.py``): processed FPS,
end-to-end latency (capture stamp → handed to the sinks) p50 / p95, per-stage times.

By default the clip is paced like a camera (``--realtime``: read at its own frame rate, newest
frame wins, frames the processing cannot keep up with are dropped — what a webcam does), so the
latency is what a call would see. ``--pipeline-unpaced`` reads every frame as fast as the loop
takes them instead (latency = processing time, nothing dropped). Without ``--frames`` the clip runs
once; with ``--frames N`` it loops until N frames were sent (paced: N output frames at the clip's
rate, i.e. N / fps seconds).

The avatar is ``--source`` or the bundled demo avatar (live/assets/mona.jpg); the backend is
``auto`` unless ``--backends`` / ``--precisions`` name some (one run per combination); ``auto`` on a CPU
is chosen as ``demo`` / ``live`` choose it (measured on the avatar, remembered:
:mod:`splinecam.engines.backends.autotune`). The recorder is on, writing a throw-away H.264 file, as
with ``splinecam demo`` and ``live --record`` (``--pipeline-no-record`` leaves it off).
"""

from __future__ import annotations

import time
from dataclasses import asdict
from pathlib import Path

from splinecam.benchmarks.runner import say, unavailable_reason
from splinecam.benchmarks.results import STATUS_FAILED, STATUS_UNAVAILABLE, PipelineResult
from splinecam.engines.errors import BackendUnavailableError, SplinecamError
from splinecam.engines.loaded_model import LoadedModel

DEFAULT_AVATAR = Path(__file__).resolve().parents[1] / "live" / "assets" / "mona.jpg"


def run_pipeline(clip: str | Path, loaded: LoadedModel, backend: str = "auto", precision: str = "auto",
                 device: str = "auto", avatar: str | Path | None = None, max_frames: int | None = None,
                 paced: bool = True, output_size: tuple[int, int] = (1280, 720), compile_bf16: bool = True,
                 record: bool = True) -> PipelineResult:
    """One live run on ``clip``; a backend that cannot run here gives status "unavailable"."""
    from splinecam.engines.backends import BackendOptions, resolve_choice

    clip = Path(clip).expanduser()
    if not clip.is_file():
        raise SplinecamError(f"--pipeline {clip}: no such video (give a clip that stands in for the camera)")
    avatar = Path(avatar) if avatar else DEFAULT_AVATAR
    try:
        b, d, p = resolve_choice(backend, device, precision)
    except BackendUnavailableError as err:
        return _not_run(clip, backend, precision, device, paced, output_size, STATUS_UNAVAILABLE,
                        unavailable_reason(backend, err))
    t0 = time.perf_counter()
    options = BackendOptions(progress=lambda msg: say(f"  {b} {p}: {msg}"), compile=compile_bf16)
    try:  # auto as demo / live choose it (measured on the avatar)
        from splinecam.engines.model_options import avatar_sample, build_backend

        sample = avatar_sample(avatar, loaded.config.image_size) if d == "cpu" else None
        impl = build_backend(loaded, backend, device, precision, options, sample, say=lambda m: say(f"  {m}"))
        b, p = impl.graphs.engine, impl.graphs.precision
    except BackendUnavailableError as err:
        return _not_run(clip, b, p, d, paced, output_size, STATUS_UNAVAILABLE, unavailable_reason(b, err))
    return _run_live(impl, clip, avatar, max_frames, paced, output_size, t0, b, p, d, record)


def _run_live(impl, clip: Path, avatar: Path, max_frames: int | None, paced: bool, output_size: tuple[int, int],
              t0: float, b: str, p: str, d: str, record: bool = True) -> PipelineResult:
    """The live pipeline over ``impl`` (closed afterwards); ``record``: the recorder on, into a temporary file."""
    import tempfile

    from splinecam.live.pipeline import LiveOptions, LivePipeline

    with tempfile.TemporaryDirectory(prefix="splinecam-bench-rec-") as tmp:
        opts = LiveOptions(avatar=str(avatar), camera=str(clip), camera_size=None, camera_fps=None,
                           output_size=output_size, fps=None, virtual_camera=False, preview=False,
                           record=str(Path(tmp) / "recording.mp4") if record else None,
                           max_frames=max_frames, metrics=None, realtime=paced, loop=max_frames is not None)
        try:
            pipe = LivePipeline.build(opts, impl, say=lambda s: None)
            setup_s = time.perf_counter() - t0
            say(f"  live pipeline: {impl.describe()} on {clip.name} "
                f"({'paced like a camera' if paced else 'unpaced'}), output {output_size[0]}x{output_size[1]}"
                f"{', recorder on' if record else ''} …")
            summary = pipe.run()
        finally:
            impl.close()
    return PipelineResult(
        clip=clip.name, backend=b, precision=p, device=d, paced=paced, output_size=summary.output_size or "",
        fps_processed=summary.fps.processed, fps_output=summary.fps.output,
        latency_ms=asdict(summary.latency_ms), stages_ms=summary.stages_ms, frames=summary.frames,
        duration_s=summary.duration_s, setup_s=round(setup_s, 2), variant=impl.describe(),
        remote=summary.sections.get("remote"), recorded=record)


def run_remote_pipeline(opts) -> PipelineResult:
    """``--pipeline CLIP --remote HOST:PORT``: the networks on a ``splinecam worker``; the result's ``remote``
    splits the round trip into network, worker and inference time and counts the bytes per frame."""
    from splinecam.engines.remote.client import RemoteBackend

    clip = Path(opts.pipeline).expanduser()
    if not clip.is_file():
        raise SplinecamError(f"--pipeline {clip}: no such video (give a clip that stands in for the camera)")
    avatar = Path(opts.source) if opts.source else DEFAULT_AVATAR
    t0 = time.perf_counter()
    host, port = opts.remote
    impl = RemoteBackend(host, port, opts.token, opts.remote_codec, opts.remote_quality,
                         say=lambda msg: say(f"  {msg}"))
    return _run_live(impl, clip, avatar, opts.pipeline_frames, not opts.pipeline_unpaced, opts.output_size, t0,
                     "remote", impl.precision, impl.device, not getattr(opts, "pipeline_no_record", False))


def _not_run(clip: Path, backend: str, precision: str, device: str, paced: bool, size: tuple[int, int],
             status: str, reason: str) -> PipelineResult:
    return PipelineResult(clip=clip.name, backend=backend, precision=precision, device=device, paced=paced,
                          output_size=f"{size[0]}x{size[1]}", fps_processed=None, fps_output=None, latency_ms={},
                          stages_ms={}, frames={}, duration_s=0.0, setup_s=0.0, status=status, reason=reason)


def run_pipelines(opts, loaded: LoadedModel) -> list[PipelineResult]:
    """One pipeline run per requested backend × precision (``auto`` × ``auto`` by default)."""
    out = []
    for b in opts.backends or ["auto"]:
        for p in opts.precisions or ["auto"]:
            try:
                res = run_pipeline(opts.pipeline, loaded, b, p, opts.device, opts.source, opts.pipeline_frames,
                                   not opts.pipeline_unpaced, opts.output_size, opts.compile,
                                   not getattr(opts, "pipeline_no_record", False))
            except SplinecamError:
                raise
            except Exception as err:  # one broken backend must not hide the others' figures
                res = _not_run(Path(opts.pipeline), b, p, opts.device, not opts.pipeline_unpaced, opts.output_size,
                               STATUS_FAILED, f"{type(err).__name__}: {(str(err).strip().splitlines() or [''])[0][:200]}")
            if res.status != "ok":
                say(f"    {res.status}: {res.reason}")
            out.append(res)
    return out
