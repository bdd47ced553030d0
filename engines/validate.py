"""One validation layer for every number that comes from outside the program: a command-line flag, a
config file, remembered state (``state.json``) and weights metadata.

    FPS = Range(float, low=0, low_open=True, high=1000)        # a finite number in (0, 1000]
    FPS.check(value, "--fps")                                   # → float, or ValidationError
    parser.add_argument("--fps", type=number_arg(FPS))          # argparse: exit 2 naming the flag
    check_number(value, "num_tps", int, low=1, high=64)         # the same, without a named Range
    check_array(value, "calibration", shape=(50, 2), low=-10, high=10)   # nested lists → float32 array
    check_finite_tensors(state_dict, "kp_detector")              # weights: no NaN / inf

The rules are the same everywhere:

* the right type: a count is an ``int`` (a float with an integral value, e.g. YAML's ``10.0``, is
  accepted); a quantity is an ``int`` or ``float``; ``bool`` is never a number; text is parsed only
  where it came from the command line (:func:`number_arg`), never in a config or state file;
* finite: NaN and ±inf are refused (they silently turn into black frames or busy loops downstream);
* inside the range the consumer can handle (a 0-pixel or a 99999-pixel output is refused before
  anything is allocated).

Failures raise :class:`ValidationError`, a :class:`~splinecam.engines.errors.SplinecamError` whose
message is one line: what, the value given, and what is allowed. :func:`number_arg` turns them into
argparse errors (``splinecam live: error: argument --fps: …``, exit 2).
"""

from __future__ import annotations

import argparse
import math
import numbers
from dataclasses import dataclass
from typing import Any, Iterable

import numpy as np

from splinecam.engines.errors import SplinecamError


class ValidationError(SplinecamError, ValueError):
    """A number (or array of numbers) from a flag, config, state or metadata is unusable. Also a
    ValueError, so code that checks its own arguments keeps its contract."""


def _fmt(x: float) -> str:
    return f"{x:g}" if isinstance(x, float) else str(x)


@dataclass(frozen=True)
class Range:
    """What a number may be: ``kind`` (int or float), bounds (None: unbounded), open or closed.

    ``describe()`` is the human phrase used in every message ("an integer from 1 to 4096",
    "a finite number > 0").
    """

    kind: type = float
    low: float | None = None
    high: float | None = None
    low_open: bool = False
    high_open: bool = False

    def describe(self) -> str:
        noun = "an integer" if self.kind is int else "a finite number"
        lo, hi = self.low, self.high
        if lo is not None and hi is not None and not self.low_open and not self.high_open:
            return f"{noun} from {_fmt(lo)} to {_fmt(hi)}"
        parts = []
        if lo is not None:
            parts.append(f"{'>' if self.low_open else '>='} {_fmt(lo)}")
        if hi is not None:
            parts.append(f"{'<' if self.high_open else '<='} {_fmt(hi)}")
        return noun + (" " + " and ".join(parts) if parts else "")

    def contains(self, value: Any) -> bool:
        """Whether ``value`` is already a valid number of this range (no conversion)."""
        try:
            return self.check(value, "value") == value
        except ValidationError:
            return False

    def check(self, value: Any, what: str) -> int | float:
        """``value`` as ``kind`` if it is one (see the module rules), else ValidationError."""
        bad = ValidationError(f"{what} must be {self.describe()}, got {_show(value)}")
        if isinstance(value, (bool, np.bool_)) or not isinstance(value, numbers.Real):
            raise bad
        v = float(value)
        if not math.isfinite(v):
            raise bad
        if self.kind is int:
            if isinstance(value, numbers.Integral):
                v = int(value)
            elif v.is_integer():
                v = int(v)
            else:
                raise bad
        if self.low is not None and (v < self.low or (self.low_open and v == self.low)):
            raise bad
        if self.high is not None and (v > self.high or (self.high_open and v == self.high)):
            raise bad
        return v

    def parse(self, text: str, what: str) -> int | float:
        """A command-line string → number (``kind``), checked. Raises ValidationError."""
        s = str(text).strip()
        try:
            value: int | float = int(s) if self.kind is int else float(s)
        except ValueError:
            try:  # "1e3" or "10.0" for a count
                f = float(s)
            except ValueError:
                raise ValidationError(f"{what} must be {self.describe()}, got {text!r}") from None
            if self.kind is not int:
                raise ValidationError(f"{what} must be {self.describe()}, got {text!r}") from None
            value = f
        return self.check(value, what)


# ranges several commands share
FPS = Range(float, low=0, low_open=True, high=1000)      # frames per second
COUNT = Range(int, low=1, high=10**9)                    # --max-frames, --batch-size, steps …
THREADS = Range(int, low=1, high=1024)
SEED = Range(int, low=0, high=2**32 - 1)


def _show(value: Any) -> str:
    text = repr(value)
    return text if len(text) <= 40 else text[:37] + "..."


def check_number(value: Any, what: str, kind: type = float, low: float | None = None, high: float | None = None,
                 low_open: bool = False, high_open: bool = False) -> int | float:
    """:meth:`Range.check` without naming a Range first."""
    return Range(kind, low, high, low_open, high_open).check(value, what)


class NumberArg:
    """An argparse ``type=`` that parses and checks one number; its ``range`` is introspectable (the
    fuzz test reads it). Errors are ``argparse.ArgumentTypeError`` (argparse prefixes the flag)."""

    def __init__(self, rng: Range):
        self.range = rng
        self.__name__ = "integer" if rng.kind is int else "number"

    def __call__(self, text: str) -> int | float:
        try:
            return self.range.parse(text, "value")
        except ValidationError:
            raise argparse.ArgumentTypeError(f"must be {self.range.describe()}, got {text!r}") from None

    def __repr__(self) -> str:
        return f"NumberArg({self.range})"


def number_arg(kind_or_range: type | Range = float, low: float | None = None, high: float | None = None,
               low_open: bool = False, high_open: bool = False) -> NumberArg:
    """An argparse ``type=`` for a number: ``number_arg(FPS)`` or ``number_arg(int, low=1, high=4096)``."""
    rng = kind_or_range if isinstance(kind_or_range, Range) else Range(kind_or_range, low, high, low_open, high_open)
    return NumberArg(rng)


def positive_int(high: int = 10**9) -> NumberArg:
    """A count ≥ 1 (``--max-frames``, ``--batch-size`` …)."""
    return number_arg(int, low=1, high=high)


def non_negative_int(high: int = 10**9) -> NumberArg:
    """A count ≥ 0 (``--warmstart-steps``, ``--vis-every`` where 0 means never …)."""
    return number_arg(int, low=0, high=high)


def check_array(value: Any, what: str, shape: Iterable[int | None], low: float | None = None,
                high: float | None = None, dtype=np.float32) -> np.ndarray:
    """Nested lists of numbers (JSON) → a ``dtype`` (float32) array of ``shape`` (None: any length), every element
    finite and inside [low, high]. Ragged lists, text, bools and NaN raise ValidationError."""
    shape = tuple(shape)
    if not isinstance(value, (list, tuple, np.ndarray)):
        raise ValidationError(f"{what} must be a list of numbers of shape {_shape_text(shape)}, got {_show(value)}")

    def numbers_only(x, depth=0):
        if depth > len(shape):
            return False
        if isinstance(x, (list, tuple)):
            return all(numbers_only(y, depth + 1) for y in x)
        return isinstance(x, numbers.Real) and not isinstance(x, (bool, np.bool_))

    if isinstance(value, np.ndarray):
        ok = value.dtype.kind in "iuf"
        arr = value.astype(np.float64) if ok else None
    else:
        ok = numbers_only(value)
        try:
            arr = np.asarray(value, dtype=np.float64) if ok else None
        except (ValueError, TypeError):  # ragged
            arr, ok = None, False
    if not ok or arr is None or arr.ndim != len(shape) or any(w is not None and s != w for s, w in zip(arr.shape, shape)):
        got = f"shape {arr.shape}" if arr is not None else _show(value)
        raise ValidationError(f"{what} must be a list of numbers of shape {_shape_text(shape)}, got {got}")
    if not np.isfinite(arr).all():
        raise ValidationError(f"{what} holds NaN or infinite values")
    if (low is not None and (arr < low).any()) or (high is not None and (arr > high).any()):
        raise ValidationError(f"{what} has values outside [{_fmt(low)}, {_fmt(high)}]")
    return arr.astype(dtype)


def _shape_text(shape: tuple) -> str:
    return "(" + ", ".join("N" if s is None else str(s) for s in shape) + ")"


def check_finite_tensors(tensors: dict, what: str) -> None:
    """Refuse weights with NaN or ±inf: ``tensors`` maps names to torch tensors (or numpy arrays).
    Raises ValidationError naming the first bad tensor and how many of its values are bad."""
    for name, t in tensors.items():
        if hasattr(t, "is_floating_point"):  # torch tensor, without importing torch here
            if not t.is_floating_point():
                continue
            import torch

            finite = torch.isfinite(t)
            if bool(finite.all()):
                continue
            bad, total = int((~finite).sum()), t.numel()
        else:
            a = np.asarray(t)
            if a.dtype.kind != "f" or np.isfinite(a).all():
                continue
            bad, total = int((~np.isfinite(a)).sum()), a.size
        raise ValidationError(f"{what}.{name} holds {bad} NaN/inf value(s) of {total}: these weights are damaged "
                              f"(a diverged training run or a corrupt file); use another checkpoint")
