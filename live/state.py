"""Settings remembered between live runs: ``$XDG_CONFIG_HOME/splinecam/state.json``
(``~/.config/splinecam/state.json`` when XDG_CONFIG_HOME is unset).

Remembered: the last avatar (path and which picture of a folder), camera, normalisation mode,
calibration (the reference driving keypoints) and smoothing settings. A command-line option always
wins over a remembered value. A missing or unreadable file means "nothing remembered" (one warning
for an unreadable one); writing is atomic.
"""

from __future__ import annotations

import json
import logging
import os
from dataclasses import asdict, dataclass, fields
from pathlib import Path

log = logging.getLogger(__name__)


def state_path() -> Path:
    base = os.environ.get("XDG_CONFIG_HOME") or ""
    root = Path(base) if base.strip() and Path(base).is_absolute() else Path.home() / ".config"
    return root / "splinecam" / "state.json"


@dataclass
class LiveState:
    """avatar: the --avatar path; avatar_name: the file shown last (in a folder); camera: the
    --camera spec; calibration: (K, 2) reference keypoints as nested lists."""

    avatar: str | None = None
    avatar_name: str | None = None
    camera: str | None = None
    mode: str | None = None
    calibration: list | None = None
    smoothing: bool | None = None
    smooth_min_cutoff: float | None = None
    smooth_beta: float | None = None
    mirror: bool | None = None


def load_state(path: Path | None = None) -> LiveState:
    p = path or state_path()
    try:
        data = json.loads(p.read_text())
    except FileNotFoundError:
        return LiveState()
    except (OSError, ValueError) as err:
        log.warning("ignoring %s: %s", p, err)
        return LiveState()
    if not isinstance(data, dict):
        return LiveState()
    known = {f.name for f in fields(LiveState)}
    return LiveState(**{k: v for k, v in data.items() if k in known})


def save_state(state: LiveState, path: Path | None = None) -> Path | None:
    """Write ``state``; returns the path, or None (after a warning) if it cannot be written."""
    p = path or state_path()
    try:
        p.parent.mkdir(parents=True, exist_ok=True)
        tmp = p.with_name(p.name + ".tmp")
        tmp.write_text(json.dumps(asdict(state), indent=1) + "\n")
        tmp.replace(p)
        return p
    except OSError as err:
        log.warning("cannot remember the settings in %s: %s", p, err)
        return None
