"""Durable file writes for the whole project: one helper, tested once.

* ``atomic_write_*`` / :func:`atomic_open`: write a temporary file beside the target, fsync
  it, ``os.replace`` it over the target, fsync the folder. A reader sees the old file or the
  new one, never a mix, after ``kill -9`` and after a power loss.
* :func:`append_line`: one JSONL record, fsynced. If the file ends in a torn line (a writer
  killed mid-line), the new record starts on a fresh line instead of being glued onto the
  fragment and lost with it; :func:`read_jsonl` skips and counts such fragments.
* A full disk raises :class:`DiskFullError` (an ``OSError`` with ``errno.ENOSPC``) that names
  the file and says what to do; the temporary file is removed and the target is untouched.
"""

from __future__ import annotations

import contextlib
import errno
import json
import os
import stat
import threading
import uuid
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import IO, Any, Literal, TypeVar, overload

__all__ = [
    "DiskFullError",
    "append_line",
    "atomic_open",
    "atomic_write_bytes",
    "atomic_write_json",
    "atomic_write_text",
    "durable_replace",
    "fsync_path",
    "open_regular",
    "read_jsonl",
]

T = TypeVar("T")

_APPEND_LOCK = threading.Lock()


class DiskFullError(OSError):
    """No space left while writing a file; the file's previous version is intact."""


def _disk_full(exc: OSError, path: Path) -> OSError:
    if exc.errno in (errno.ENOSPC, errno.EDQUOT):
        return DiskFullError(
            exc.errno,
            f"No space left on the device while writing {str(path)!r}; the previous version of the file is "
            "intact. Free some space (or choose another --out), then continue with --resume.",
        )
    return exc


def open_regular(path: str | Path, *, dir_fd: int | None = None) -> int | None:
    """A read-only descriptor of the regular file at ``path``, or None: for files untrusted code wrote.

    Links are not followed and nothing but a regular file is accepted; the open never blocks (a FIFO
    planted in place of an output would otherwise hang the reader forever).
    """
    try:
        fd = os.open(path, os.O_RDONLY | os.O_NOFOLLOW | os.O_NONBLOCK, dir_fd=dir_fd)
    except OSError:
        return None
    try:
        if not stat.S_ISREG(os.fstat(fd).st_mode):
            os.close(fd)
            return None
        os.set_blocking(fd, True)
    except OSError:
        os.close(fd)
        return None
    return fd


def fsync_path(path: str | Path) -> None:
    """fsync a file or a directory (a directory's fsync makes renames and new entries durable)."""
    flags = os.O_RDONLY | (os.O_DIRECTORY if Path(path).is_dir() else 0)
    fd = os.open(path, flags)
    try:
        os.fsync(fd)
    except OSError as exc:  # some filesystems refuse fsync on directories; nothing more can be done there
        if exc.errno not in (errno.EINVAL, errno.ENOTSUP, errno.EBADF):
            raise
    finally:
        os.close(fd)


def _tmp_name(path: Path) -> Path:
    return path.with_name(f".{path.name}.{os.getpid()}.{uuid.uuid4().hex[:8]}.tmp")


@overload
def atomic_open(
    path: str | Path, mode: Literal["wb"] = "wb"
) -> contextlib.AbstractContextManager[IO[bytes]]: ...
@overload
def atomic_open(path: str | Path, mode: Literal["w"]) -> contextlib.AbstractContextManager[IO[str]]: ...
def atomic_open(
    path: str | Path, mode: Literal["wb", "w"] = "wb"
) -> contextlib.AbstractContextManager[IO[Any]]:
    """A file to write ``path`` through (``"wb"``, or ``"w"`` for UTF-8 text): committed on success.

    On an exception inside the block the temporary file is removed and ``path`` is untouched.

    Raises:
        DiskFullError: the device is full (the previous ``path`` is intact).
    """
    return _atomic_open(Path(path), mode)


@contextlib.contextmanager
def _atomic_open(path: Path, mode: Literal["wb", "w"]) -> Iterator[IO[Any]]:
    tmp = _tmp_name(path)
    try:
        with open(tmp, "xb") if mode == "wb" else open(tmp, "x", encoding="utf-8", newline="") as fh:
            yield fh
            fh.flush()
            os.fsync(fh.fileno())
        os.replace(tmp, path)
    except OSError as exc:
        with contextlib.suppress(OSError):
            tmp.unlink()
        raise _disk_full(exc, path) from exc
    except BaseException:
        with contextlib.suppress(OSError):
            tmp.unlink()
        raise
    fsync_path(path.parent)


def atomic_write_bytes(path: str | Path, data: bytes) -> None:
    """Replace ``path`` with ``data`` durably (see the module docstring)."""
    with atomic_open(path, "wb") as fh:
        fh.write(data)


def atomic_write_text(path: str | Path, text: str) -> None:
    """Replace ``path`` with UTF-8 ``text`` durably."""
    atomic_write_bytes(path, text.encode("utf-8"))


def atomic_write_json(path: str | Path, obj: Any, *, indent: int | None = 1) -> None:
    """Replace ``path`` with ``obj`` as JSON (UTF-8, non-JSON values via ``str``) durably."""
    atomic_write_text(path, json.dumps(obj, ensure_ascii=False, indent=indent, default=str))


def durable_replace(src: str | Path, dst: str | Path) -> None:
    """``os.replace(src, dst)`` made durable: ``src`` (file or folder) and both parent folders fsynced."""
    src, dst = Path(src), Path(dst)
    fsync_path(src)
    os.replace(src, dst)
    fsync_path(dst.parent)
    if src.parent != dst.parent:
        fsync_path(src.parent)


def append_line(path: str | Path, line: str) -> None:
    """Append one record (no newline inside) to a JSONL file, fsynced.

    A torn last line left by a killed writer is closed first, so this record lands on a line
    of its own (the fragment stays a line that :func:`read_jsonl` skips and counts).

    Raises:
        ValueError: ``line`` contains a newline.
        DiskFullError: the device is full; the file then ends at a line boundary or a torn
            line, which the next append closes.
    """
    if "\n" in line or "\r" in line:
        raise ValueError("append_line writes one line: the record must not contain a newline")
    path = Path(path)
    data = line.encode("utf-8") + b"\n"
    with _APPEND_LOCK:
        created = not path.exists()
        try:
            with open(path, "a+b") as fh:
                end = fh.seek(0, os.SEEK_END)
                if end > 0:
                    fh.seek(end - 1)
                    if fh.read(1) != b"\n":
                        data = b"\n" + data
                fh.write(data)
                fh.flush()
                os.fsync(fh.fileno())
        except OSError as exc:
            raise _disk_full(exc, path) from exc
        if created:
            fsync_path(path.parent)


def read_jsonl(path: str | Path, parse: Callable[[str], T] = json.loads) -> tuple[list[T], int]:
    """Records of a JSONL file parsed by ``parse``, and how many lines were torn or invalid.

    Blank lines are ignored; a line that ``parse`` rejects (``ValueError``) is counted, not
    returned. A missing file is ``([], 0)``.
    """
    path = Path(path)
    if not path.is_file():
        return [], 0
    records: list[T] = []
    bad = 0
    for raw in path.read_bytes().split(b"\n"):
        if not raw.strip():
            continue
        try:
            records.append(parse(raw.decode("utf-8")))
        except (ValueError, UnicodeDecodeError):
            bad += 1
    return records, bad
