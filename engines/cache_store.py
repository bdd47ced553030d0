"""Verified caches: one mechanism for everything splinecam builds once and reuses — ONNX exports,
TensorRT plans, and whatever comes next (OpenVINO models, compiled torch artefacts).

A cache *entry* is a folder (or one file) plus its *seal*: a small JSON record, written last, once
every file of the entry is complete, holding the key the entry was built for and each file's size
and sha256::

    {"format": 1, "key": {"model_hash": "…", "precision": "fp16", …},
     "files": {"generator.onnx": {"size": 123, "sha256": "…"}, …}}

Nothing unsealed or mismatching is ever used. Before use an entry is checked, and anything but VALID
is rebuilt (with one line saying why):

* MISSING: no seal and no file (never built), or the sealed files are all gone;
* CORRUPT: files without a seal (an interrupted build), an unreadable seal, a listed file missing or of
  another size, or whose sha256 differs (truncated, overwritten in place, bit rot);
* STALE: the seal's key differs from what the caller needs (another model, precision, GPU, version).

A folder entry (``CacheDir``)::

    entry = CacheDir(root / "onnx" / name, key={"model_hash": h, "precision": "fp32"}, what="ONNX export")
    directory = entry.ensure(build, say)   # build(tmp_dir) fills a fresh folder; it is sealed and
                                           # renamed into place (an interrupted build leaves nothing used)

A one-file entry (TensorRT plans: ``engines/engine_cache.py`` ``store_plan`` / ``lookup_plan``) keeps its
seal beside the file (``<file>.json``) and is decided by the same pure :func:`record_status`.

Where the cache cannot be written (a read-only ``~/.cache``, a full disk), :func:`fallback_location`
gives a folder under the system's temporary directory and :func:`warn_fallback` says so once per
folder; a VALID entry in the read-only place is still used as is.

Adding a cache (e.g. OpenVINO's compiled models): pick a folder under ``engine_cache.cache_root()``, a
key dict of everything the artefact depends on, and call ``CacheDir(folder, key, what).ensure(build)``.
Hash cost: sha256 reads every byte once per check (~1 GB/s; a 20 MB export ≈ 20 ms).
"""

from __future__ import annotations

import enum
import hashlib
import json
import os
import shutil
import tempfile
import threading
from pathlib import Path
from typing import Callable

from splinecam.engines.errors import EngineCacheError
from splinecam.engines.outputs import write_text_atomic

SEAL_NAME = ".splinecam-seal.json"
SEAL_FORMAT = 1


class EntryStatus(enum.Enum):
    VALID = "valid"
    MISSING = "missing"
    STALE = "stale"
    CORRUPT = "corrupt"


def file_sha256(path: str | os.PathLike) -> str:
    """sha256 of a file's bytes, read in 1 MiB blocks."""
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            h.update(block)
    return h.hexdigest()


def seal_record(key: dict, files: dict[str, Path]) -> dict:
    """The seal of an entry: ``key`` and, per file name, its size and sha256 (read now)."""
    return {"format": SEAL_FORMAT, "key": dict(key),
            "files": {name: {"size": p.stat().st_size, "sha256": file_sha256(p)} for name, p in sorted(files.items())}}


def read_seal(path: Path) -> dict | None:
    """The seal at ``path``: None when there is none, ``{}`` when it cannot be read or parsed."""
    if not path.exists():
        return None
    try:
        data = json.loads(path.read_text())
    except (OSError, ValueError, UnicodeDecodeError):
        return {}
    return data if isinstance(data, dict) else {}


def record_status(key: dict, record: dict | None, have: dict[str, str | None]) -> tuple[EntryStatus, str]:
    """Decide whether an entry may be used (pure: no file access).

    key: what the caller needs. record: the seal (None: no seal; ``{}``: unreadable). have: per file the
    entry should hold, its sha256 on disk (None: the file is missing). The files compared are the seal's
    (when it lists them) else ``have``'s. Returns (status, one-line reason).
    """
    present = {n: h for n, h in have.items() if h is not None}
    if record is None:
        if not present:
            return EntryStatus.MISSING, "not built yet"
        return EntryStatus.CORRUPT, "files without a seal (an interrupted build?)"
    listed = record.get("files") if isinstance(record, dict) else None
    names = list(listed) if isinstance(listed, dict) and listed else list(have)
    if names and not any(have.get(n) is not None for n in names):
        return EntryStatus.MISSING, "its files are missing beside the seal"
    if not isinstance(record, dict) or not record:
        return EntryStatus.CORRUPT, "the seal is unreadable"
    if record.get("format") != SEAL_FORMAT or not isinstance(record.get("key"), dict) or not isinstance(listed, dict):
        return EntryStatus.CORRUPT, "the seal has an unknown format"
    stored = record["key"]
    for part, want in key.items():
        got = stored.get(part)
        if got != want:
            return EntryStatus.STALE, f"built for {part}={got!r}, need {want!r}"
    for name in names:
        info = listed.get(name)
        if not isinstance(info, dict):
            return EntryStatus.CORRUPT, f"{name} is not in the seal"
        if have.get(name) is None:
            return EntryStatus.CORRUPT, f"{name} is missing"
        if info.get("sha256") != have[name]:
            return EntryStatus.CORRUPT, f"{name} does not match its checksum (truncated or overwritten)"
    return EntryStatus.VALID, "matches its seal"


def writable(folder: Path) -> str | None:
    """None if files can be created in ``folder`` (created if missing; tried, not guessed), else why."""
    try:
        folder.mkdir(parents=True, exist_ok=True)
        fd, name = tempfile.mkstemp(prefix=".splinecam-probe.", dir=folder)
        os.close(fd)
        os.unlink(name)
        return None
    except OSError as err:
        return err.strerror or str(err)


def fallback_location(path: Path) -> Path:
    """Where an entry at ``path`` goes when its cache cannot be written: the same last two path
    parts under ``<tmp>/splinecam-cache-<user>/``."""
    user = os.getuid() if hasattr(os, "getuid") else os.environ.get("USERNAME", "user")
    return Path(tempfile.gettempdir()) / f"splinecam-cache-{user}" / path.parent.name / path.name


_warned: set[str] = set()
_warn_lock = threading.Lock()


def warn_fallback(folder: Path, why: str, instead: Path, say: Callable[[str], None]) -> None:
    """Say once per folder that the cache there cannot be written and ``instead`` is used."""
    with _warn_lock:
        if str(folder) in _warned:
            return
        _warned.add(str(folder))
    say(f"warning: the cache folder {folder} is not writable ({why}); using {instead} for now "
        f"(set SPLINECAM_CACHE to a writable folder to keep it)")


class CacheDir:
    """A folder cache entry: ``directory`` (its files), ``key`` (dict of what it depends on, JSON
    values), ``what`` (for messages, e.g. "ONNX export"). See the module docstring."""

    def __init__(self, directory: str | os.PathLike, key: dict, what: str = "cache entry"):
        self.directory = Path(directory)
        self.key = dict(key)
        self.what = what

    def check(self, directory: Path | None = None) -> tuple[EntryStatus, str]:
        d = Path(directory or self.directory)
        seal = read_seal(d / SEAL_NAME)
        if isinstance(seal, dict) and isinstance(seal.get("files"), dict) and seal["files"]:
            names = list(seal["files"])  # what was sealed (extra files beside them are not part of it)
        else:
            names = [p.name for p in d.iterdir() if p.is_file() and p.name != SEAL_NAME] if d.is_dir() else []
        have = {}
        for n in names:
            p = d / n
            try:
                have[n] = file_sha256(p) if p.is_file() else None
            except OSError:
                have[n] = None
        return record_status(self.key, seal, have)

    def seal(self, directory: Path | None = None) -> dict:
        """Seal the entry's current files (written last: the entry is complete now)."""
        d = Path(directory or self.directory)
        record = seal_record(self.key, {p.name: p for p in d.iterdir() if p.is_file() and p.name != SEAL_NAME})
        write_text_atomic(d / SEAL_NAME, json.dumps(record, indent=1), f"{self.what} seal")
        return record

    def ensure(self, build: Callable[[Path], object], say: Callable[[str], None] = print) -> Path:
        """The folder of a VALID entry: this one if it checks out, else freshly built. ``build(folder)``
        fills an empty folder beside the entry; it is sealed and renamed into place, so an interrupted
        or failed build is never used. An unwritable cache builds in :func:`fallback_location`."""
        status, reason = self.check()
        if status is EntryStatus.VALID:
            return self.directory
        target = self.directory
        why = writable(target.parent)
        if why is not None:
            target = fallback_location(self.directory)
            warn_fallback(self.directory.parent, why, target.parent, say)
            status, reason = self.check(target)
            if status is EntryStatus.VALID:
                return target
            if writable(target.parent) is not None:
                raise EngineCacheError(f"cannot write the {self.what}: neither {self.directory.parent} nor "
                                       f"{target.parent} is writable; set SPLINECAM_CACHE to a writable folder")
        if status is EntryStatus.MISSING:
            say(f"building the {self.what} once into {target}")
        else:
            say(f"the cached {self.what} in {target} is {status.value} ({reason}): rebuilding it")
        work = Path(tempfile.mkdtemp(prefix=f".{target.name}.build-", dir=target.parent))
        try:
            build(work)
            self.seal(work)
            self._swap(work, target)
        finally:
            if work.exists():
                shutil.rmtree(work, ignore_errors=True)
        return target

    def _swap(self, work: Path, target: Path) -> None:
        """Move the sealed ``work`` folder onto ``target`` (the old entry, if any, removed)."""
        old = None
        if target.exists():
            old = Path(tempfile.mkdtemp(prefix=f".{target.name}.old-", dir=target.parent))
            os.replace(target, old / "entry")
        try:
            os.replace(work, target)
        except OSError:
            if self.check(target)[0] is not EntryStatus.VALID:  # another process just built it: use theirs
                raise
        finally:
            if old is not None:
                shutil.rmtree(old, ignore_errors=True)
