"""Settings remembered between live runs: ``$XDG_CONFIG_HOME/splinecam/state.json``
(``~/.config/splinecam/state.json`` when XDG_CONFIG_HOME is unset).

Remembered: the last avatar (path and which picture of a folder), camera, normalisation mode,
calibration (the reference driving keypoints) and smoothing settings. A command-line option always
wins over a remembered value. A missing or unreadable file means "nothing remembered" (one warning
for an unreadable one); writing is atomic.

Every remembered value passes the same checks as its flag (engines/validate.py): a value of the
wrong type, NaN / inf, out of range, or a calibration that is not a finite (K, 2) list, is ignored
with one warning line and never written back (the next save holds what this run used instead).
"""

from __future__ import annotations

import json
import logging
import os
from dataclasses import asdict, dataclass, fields
from pathlib import Path

from splinecam.engines.errors import SplinecamError
from splinecam.engines.outputs import write_text_atomic
from splinecam.engines.validate import ValidationError, check_array
from splinecam.live.normalise import MODES
from splinecam.live.smoothing import BETA, CUTOFF

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


def _text(value, what):
    if not isinstance(value, str) or not value.strip() or len(value) > 4096 or "\x00" in value:
        raise ValidationError(f"{what} must be a non-empty text, got {value!r:.40}")
    return value


def _flag(value, what):
    if not isinstance(value, bool):
        raise ValidationError(f"{what} must be true or false, got {value!r:.40}")
    return value


def _mode(value, what):
    if value not in MODES:
        raise ValidationError(f"{what} must be one of {', '.join(MODES)}, got {value!r:.40}")
    return value


def _calibration(value, what):
    return check_array(value, what, (None, 2), low=-10.0, high=10.0, dtype=float).tolist()


# how each remembered value is checked (the same rules as the flags that set it)
CHECKS = {"avatar": _text, "avatar_name": _text, "camera": _text, "mode": _mode, "calibration": _calibration,
          "smoothing": _flag, "smooth_min_cutoff": CUTOFF.check, "smooth_beta": BETA.check, "mirror": _flag}


def load_state(path: Path | None = None, warn=None) -> LiveState:
    """The remembered settings; a bad value is dropped with one ``warn`` line (default: the log)."""
    p = path or state_path()
    warn = warn or log.warning
    try:
        data = json.loads(p.read_text())
    except FileNotFoundError:
        return LiveState()
    except (OSError, ValueError) as err:
        warn(f"ignoring {p}: {err}")
        return LiveState()
    if not isinstance(data, dict):
        warn(f"ignoring {p}: not a JSON object")
        return LiveState()
    values = {}
    for f in fields(LiveState):
        if f.name not in data or data[f.name] is None:
            continue
        try:
            values[f.name] = CHECKS[f.name](data[f.name], f.name)
        except ValidationError as err:
            warn(f"ignoring the remembered {f.name} in {p}: {err}")
    return LiveState(**values)


def save_state(state: LiveState, path: Path | None = None) -> Path | None:
    """Write ``state``; returns the path, or None (after a warning) if it cannot be written."""
    p = path or state_path()
    try:
        return write_text_atomic(p, json.dumps(asdict(state), indent=1, allow_nan=False) + "\n", "state")
    except (SplinecamError, ValueError) as err:  # ValueError: NaN (never stored)
        log.warning("cannot remember the settings in %s: %s", p, err)
        return None
