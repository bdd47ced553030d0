"""One discipline for every file splinecam writes: checked before any work starts, written beside the
target under a temporary name and renamed into place, never one of the inputs.

    out = check_output(args.out, "--out", kind="video", inputs=[args.source, args.driving])
    # ... hours of work ...
    with atomic_path(out) as tmp:      # tmp: a hidden file beside ``out`` (same folder, same suffix)
        write_somehow(tmp)             # an exception removes tmp; success renames it onto ``out``
    write_text_atomic(path, text)      # the same for small text / JSON files (metrics, state, records)

:func:`check_output` (call it before loading a model, reading a video or training):

* the path is not an existing folder (for ``kind="dir"``: not an existing file), and its folder can
  be created and written (probed by creating a file there — permission bits lie for root and on
  read-only mounts);
* it is none of the ``inputs``: resolved paths and, for existing files, device + inode are compared,
  so a symlink or a second name of the input is caught;
* for videos and pictures the extension names a container splinecam writes (``VIDEO_SUFFIXES`` /
  ``IMAGE_SUFFIXES``); anything else (``.avi``, ``.gif``, no extension) is refused rather than
  silently written as MP4.

Files are created with the permissions an ordinary ``open()`` would give (0666 minus the umask), not
the 0600 of a temporary file. Every failure a user can cause raises :class:`OutputError` with one line
naming the flag, the path and the fix.

Videos add one more rule (engines/media.py ``VideoWriter``): an interrupted recording is finalised
into a playable file of the frames written so far.
"""

from __future__ import annotations

import contextlib
import os
import tempfile
import threading
from pathlib import Path
from typing import Iterable, Iterator

from splinecam.engines.errors import OutputError

PathLike = str | os.PathLike

VIDEO_SUFFIXES = (".mp4", ".mov", ".mkv", ".m4v")
IMAGE_SUFFIXES = (".png", ".jpg", ".jpeg", ".bmp", ".webp", ".tif", ".tiff")
KINDS = ("file", "video", "image", "dir")


_umask_lock = threading.Lock()
_umask: int | None = None


def default_mode() -> int:
    """The permissions ``open(path, "w")`` gives a new file: 0o666 minus the process umask."""
    global _umask
    with _umask_lock:
        if _umask is None:
            mask = None
            try:  # Linux ≥ 4.7 shows it without changing it
                for line in Path("/proc/self/status").read_text().splitlines():
                    if line.startswith("Umask:"):
                        mask = int(line.split()[1], 8)
            except (OSError, ValueError, IndexError):
                mask = None
            if mask is None:
                mask = os.umask(0o022)
                os.umask(mask)
            _umask = mask
        return 0o666 & ~_umask


def _same_file(a: Path, b: Path) -> bool:
    try:
        if a.resolve() == b.resolve():
            return True
    except (OSError, RuntimeError):
        pass
    try:
        return a.exists() and b.exists() and os.path.samefile(a, b)
    except OSError:
        return False


def _probe_writable(folder: Path) -> str | None:
    """None if a file can be created in ``folder`` (tried), else the reason."""
    try:
        fd, name = tempfile.mkstemp(prefix=".splinecam-probe.", dir=folder)
    except OSError as err:
        return err.strerror or str(err)
    os.close(fd)
    try:
        os.unlink(name)
    except OSError:
        pass
    return None


def _make_folder(folder: Path, flag: str, path: Path) -> None:
    if folder.is_dir():
        return
    if folder.exists() or any(p.exists() and not p.is_dir() for p in folder.parents):
        raise OutputError(f"cannot write {flag} {path}: {next(p for p in (folder, *folder.parents) if p.exists())} "
                          f"is a file, not a folder (choose another path)")
    try:
        folder.mkdir(parents=True, exist_ok=True)
    except OSError as err:
        raise OutputError(f"cannot create the folder of {flag} {path}: {err.strerror or err} "
                          f"(choose a writable path)") from None


def check_output(path: PathLike, flag: str, kind: str = "file", inputs: Iterable[PathLike | None] = (),
                 suffixes: Iterable[str] | None = None, create_folder: bool = True) -> Path:
    """Check an output path before any work starts; returns it as a Path (``~`` expanded).

    ``kind``: "file" (any file), "video" (a container of ``VIDEO_SUFFIXES``), "image"
    (``IMAGE_SUFFIXES``), "dir" (a folder the command fills: it may exist, as a folder). ``suffixes``
    overrides the allowed extensions (e.g. ``(".json",)``). ``inputs``: paths the command reads
    (None entries ignored) — the output may be none of them. The output's folder is created when
    missing (``create_folder``) and must be writable. Raises :class:`OutputError`.
    """
    if kind not in KINDS:
        raise ValueError(f"kind must be one of {KINDS}, not {kind!r}")
    if path is None or not str(path).strip():
        raise OutputError(f"{flag} needs a path")
    p = Path(path).expanduser()
    try:
        return _check_output(p, flag, kind, inputs, suffixes, create_folder)
    except OSError as err:  # a name too long, a path through something that is not a folder, …
        raise OutputError(f"cannot write {flag} {p}: {err.strerror or err} (choose another path)") from None


def _check_output(p: Path, flag: str, kind: str, inputs, suffixes, create_folder: bool) -> Path:
    for source in inputs:
        if source is None or not str(source).strip():
            continue
        s = Path(source).expanduser()
        if _same_file(p, s):
            raise OutputError(f"{flag} {p} is also an input ({s}): it would be overwritten; "
                              f"write the result somewhere else")
    if kind == "dir":
        if p.exists() and not p.is_dir():
            raise OutputError(f"{flag} {p} is a file, not a folder: give a folder (it is created if missing)")
        if create_folder:
            _make_folder(p, flag, p)
        folder = p if p.is_dir() else p.parent
    else:
        if p.is_dir():
            raise OutputError(f"{flag} {p} is a folder: give a file name, e.g. {p / _example(kind, suffixes)}")
        allowed = tuple(s.lower() for s in suffixes) if suffixes is not None else (
            VIDEO_SUFFIXES if kind == "video" else IMAGE_SUFFIXES if kind == "image" else None)
        if allowed is not None and p.suffix.lower() not in allowed:
            what = {"video": "video container", "image": "picture format"}.get(kind, "file type")
            got = f"{p.suffix!r}" if p.suffix else "no extension"
            raise OutputError(f"{flag} {p}: {got} is not a {what} splinecam writes; "
                              f"use {', '.join(allowed)}")
        folder = p.parent
        if create_folder:
            _make_folder(folder, flag, p)
    if folder.is_dir():
        why = _probe_writable(folder)
        if why is not None:
            raise OutputError(f"cannot write {flag} {p}: {folder} is not writable ({why}); choose a writable path")
    return p


def _example(kind: str, suffixes) -> str:
    if suffixes:
        return "out" + tuple(suffixes)[0]
    return {"video": "out.mp4", "image": "out.png"}.get(kind, "out.json")


def temp_path_beside(path: PathLike, suffix: str | None = None) -> Path:
    """A new, empty, hidden file beside ``path`` (same folder, same suffix unless given): the place to
    write before :func:`os.replace` moves it onto ``path``. The caller removes it on failure."""
    p = Path(path)
    fd, tmp = tempfile.mkstemp(prefix=f".{p.stem}.", suffix=f".part{p.suffix if suffix is None else suffix}",
                               dir=p.parent)
    os.close(fd)
    return Path(tmp)


def finalise(tmp: PathLike, path: PathLike) -> Path:
    """Give ``tmp`` the ordinary file permissions and rename it onto ``path`` (atomic, same folder)."""
    try:
        os.chmod(tmp, default_mode())
    except OSError:
        pass
    os.replace(tmp, path)
    return Path(path)


@contextlib.contextmanager
def atomic_path(path: PathLike, flag: str = "output") -> Iterator[Path]:
    """Yield a temporary path beside ``path``; on success it replaces ``path``, on any exception it is
    removed (``path`` untouched). OSErrors become :class:`OutputError` naming ``flag``."""
    p = Path(path)
    try:
        tmp = temp_path_beside(p)
    except OSError as err:
        raise OutputError(f"cannot write {flag} {p}: {err.strerror or err}") from None
    try:
        yield tmp
        finalise(tmp, p)
    except OSError as err:
        Path(tmp).unlink(missing_ok=True)
        raise OutputError(f"cannot write {flag} {p}: {err.strerror or err}") from None
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


def write_bytes_atomic(path: PathLike, data: bytes, flag: str = "output") -> Path:
    """Write ``data`` to ``path`` through a temporary file beside it (folder created if missing)."""
    p = Path(path)
    _make_folder(p.parent, flag, p)
    with atomic_path(p, flag) as tmp:
        with open(tmp, "wb") as f:
            f.write(data)
            f.flush()
            os.fsync(f.fileno())
    return p


def write_text_atomic(path: PathLike, text: str, flag: str = "output") -> Path:
    """:func:`write_bytes_atomic` for UTF-8 text."""
    return write_bytes_atomic(path, text.encode("utf-8"), flag)
