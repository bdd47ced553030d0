"""``train --init``: a new run's weights from a training checkpoint, a splinecam ``.safetensors`` or an
official ``.pth.tar`` — tensors present in both with equal shapes, the rest trained from scratch."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from splinecam.engines.errors import CheckpointError
from splinecam.engines.tpsmm.networks import TPSMM
from splinecam.training.checkpoint import model_from_training_checkpoint, read_training_checkpoint


@dataclass
class InitResult:
    """What ``--init`` loaded: the path, the landmark indices its run tied the keypoints to (or None),
    and per module the parameter groups it did not have (trained from scratch, e.g. a new head)."""

    path: str
    landmark_indices: list[int] | None
    fresh: dict[str, list[str]]


def _source_model(model: TPSMM, p: Path) -> tuple[TPSMM, list[int] | None]:
    """The model ``--init`` names, and its landmark indices."""
    if p.suffix == ".safetensors" or p.name.endswith(".pth.tar"):
        from splinecam.engines.tpsmm.checkpoint import load_checkpoint

        # our safetensors carry their own config (which may differ, e.g. in the keypoint head);
        # an official .pth.tar is read with this run's
        loaded = load_checkpoint(p, None if p.suffix == ".safetensors" else model.config)
        return loaded.model, (loaded.metadata.get("training") or {}).get("landmark_indices")
    ckpt = read_training_checkpoint(p)
    return model_from_training_checkpoint(ckpt), ckpt.landmark_indices


def init_weights_from(model: TPSMM, path: str) -> InitResult:
    """``--init``: weights from a training checkpoint, a splinecam safetensors or an official .pth.tar.
    Tensors present in both must have equal shapes; tensors only in ``model`` stay fresh. A light dense
    motion network narrower than this config's is widened into it (training/widen.py)."""
    p = Path(path)
    src, indices = _source_model(model, p)
    fresh_groups: dict[str, list[str]] = {}
    for name, module in model.submodules().items():
        other = getattr(src, name, None)
        if other is None:
            continue
        from splinecam.training.widen import can_widen, widen_dense_motion

        if can_widen(other, module):  # a wider config started from a narrower trained one (training/widen.py)
            widen_dense_motion(other, module)
            fresh_groups[name] = ["the new channels (widened: same function at the start)"]
            continue
        ours, theirs = module.state_dict(), other.state_dict()
        for key in ours.keys() & theirs.keys():
            if ours[key].shape != theirs[key].shape:
                raise CheckpointError(f"--init {p}: {name}.{key} is {tuple(theirs[key].shape)} there, "
                                      f"{tuple(ours[key].shape)} in this config: pass the --config it was "
                                      f"trained with, or --init a checkpoint of this config")
        fresh = sorted(ours.keys() - theirs.keys())
        if fresh and len(fresh) == len(ours):
            raise CheckpointError(f"--init {p}: its {name} shares no weights with this config: pass the "
                                  f"--config it was trained with, or --init a checkpoint of this config")
        module.load_state_dict({k: v for k, v in theirs.items() if k in ours}, strict=False)
        if fresh:  # e.g. a new keypoint head on an initialised backbone
            fresh_groups[name] = sorted({k.split(".")[0] for k in fresh})
    return InitResult(str(p), indices, fresh_groups)
