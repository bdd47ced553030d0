"""``export-weights``: a trained run (and its AVD stage) → one ``.safetensors`` with its config; or an
official TPSMM / FOMM ``.pth.tar`` converted to one (``--checkpoint``: the same weights, no pickle).

Uses :func:`splinecam.engines.tpsmm.checkpoint.save_safetensors`: the config goes into the metadata, so
``load_checkpoint`` needs no ``--config``. The training record (steps, wall time, perceptual
network, image size, landmark indices, AVD steps) is stored beside it as ``training_json``.
"""

from __future__ import annotations

from pathlib import Path


from splinecam.engines.errors import CheckpointError
from splinecam.training.avd import read_avd_checkpoint
from splinecam.training.checkpoint import CHECKPOINT, model_from_training_checkpoint, read_training_checkpoint


def export_run(run: str | Path, out: str | Path, avd: str | Path | None = None, half: bool = False) -> Path:
    """Write ``out`` from the run's checkpoint (+ the AVD run's); returns the path."""
    from splinecam.engines.tpsmm.checkpoint import save_safetensors

    p = Path(run)
    if p.is_dir():
        p = p / CHECKPOINT
    ckpt = read_training_checkpoint(p)
    model = model_from_training_checkpoint(ckpt)
    done = ckpt.progress
    record = {"steps": done.step, "epochs_completed": done.epoch, "wall_time_s": round(done.wall, 1),
              "warmstart_steps": done.warm_step, **ckpt.meta, "landmark_indices": ckpt.landmark_indices}
    include_avd = False
    if avd:
        a = read_avd_checkpoint(avd)
        try:
            model.avd_network.load_state_dict(a["avd_network"])
        except RuntimeError:
            raise CheckpointError(f"{avd}: its AVD network does not match the run's config") from None
        include_avd = True
        record["avd_steps"] = a["step"]
        record["avd_wall_time_s"] = round(a["wall_time"], 1)
    if half:
        model = model.half()
    return save_safetensors(model, out, {"training": record, "source": "splinecam train"}, include_avd=include_avd)


def convert_checkpoint(checkpoint: str | Path, out: str | Path, config: str | None = None, half: bool = False) -> Path:
    """An official TPSMM or FOMM checkpoint → our safetensors, carrying its family and config."""
    from splinecam.engines.tpsmm.checkpoint import load_checkpoint, save_safetensors

    loaded = load_checkpoint(checkpoint, config)
    model = loaded.model.half() if half else loaded.model
    return save_safetensors(model, out, {"source": f"converted from {Path(checkpoint).name}"})


def run(args) -> int:
    """CLI entry of ``export-weights``."""
    if getattr(args, "checkpoint", None):
        if args.avd:
            raise CheckpointError("--avd goes with --run (a trained AVD stage), not with --checkpoint")
        path = convert_checkpoint(args.checkpoint, args.out, getattr(args, "config", None), args.half)
    else:
        path = export_run(args.run, args.out, args.avd, args.half)
    size = Path(path).stat().st_size / 1e6
    print(f"wrote {path} ({size:.1f} MB)")
    return 0
