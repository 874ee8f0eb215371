"""Writing a file or a folder without ever replacing what is not ours.

Why: `capture --out /dev/full` run as root renamed a temporary file over the device, and a bad
output path was found only after a 30 s run. Every output the CLI and the app write goes through
here: `check_target` runs before the work (the folder exists and is writable; the target is absent
or a regular file, never a device, a /proc entry, a folder or a link to one), and `write_via_temp`
writes a temporary file beside the target, checks the target again, renames, and removes the
temporary file on every failure.
"""
from __future__ import annotations

import os
import shutil
import stat
import tempfile
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path

from explorer.model.errors import OutputError


def _refuse(path: Path, why: str) -> OutputError:
    return OutputError(f"cannot write {path}: {why}.")


def check_target(path: str | Path) -> Path:
    """`path`, checked before any work: its folder exists and is writable, and it is absent or a
    regular file (a symlink counts by what it points to; a dangling one is refused)."""
    path = Path(path)
    if not str(path) or path.name in {"", ".", ".."}:
        raise _refuse(path, "it names no file")
    parent = path.parent
    if not parent.is_dir():
        raise _refuse(path, f"the folder {parent} does not exist")
    try:
        st = os.stat(path)
    except FileNotFoundError:
        if os.path.islink(path):
            raise _refuse(path, "it is a link to nothing") from None
        st = None
    except OSError as exc:
        raise _refuse(path, exc.strerror or type(exc).__name__) from None
    if st is not None and not stat.S_ISREG(st.st_mode):
        kind = "a folder" if stat.S_ISDIR(st.st_mode) else "not a regular file (a device, pipe or socket)"
        raise _refuse(path, f"it is {kind}")
    if str(parent.resolve()).startswith(("/proc", "/sys")):
        raise _refuse(path, "it is inside a system folder")
    if not os.access(parent, os.W_OK | os.X_OK):
        raise _refuse(path, f"the folder {parent} is not writable")
    if st is not None and not os.access(path, os.W_OK):
        raise _refuse(path, "it is not writable")
    return path


def write_via_temp(path: str | Path, write: Callable[[Path], None]) -> Path:
    """Call `write(tmp)` on a temporary file beside `path`, then rename it over `path`. The target is
    checked again just before the rename; the temporary file is removed on every failure."""
    path = check_target(path)
    fd, name = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    os.close(fd)
    tmp = Path(name)
    try:
        write(tmp)
        check_target(path)  # something may have appeared there meanwhile
        os.replace(tmp, path)
    except OSError as exc:
        raise _refuse(path, exc.strerror or type(exc).__name__) from None
    finally:
        if tmp.exists():
            tmp.unlink()
    return path


def write_text(path: str | Path, text: str) -> Path:
    return write_via_temp(path, lambda tmp: tmp.write_text(text, encoding="utf-8"))


def check_output_folder(folder: str | Path, create: bool = True) -> Path:
    """A folder that outputs go into (a cache): creatable or existing, a real folder, writable."""
    folder = Path(folder)
    if folder.exists() and not folder.is_dir():
        raise OutputError(f"cannot use {folder}: it is not a folder.")
    if str(folder.resolve()).startswith(("/proc", "/sys", "/dev")):
        raise OutputError(f"cannot use {folder}: it is inside a system folder.")
    if create:
        try:
            folder.mkdir(parents=True, exist_ok=True)
        except OSError as exc:
            raise OutputError(f"cannot use {folder}: {exc.strerror or type(exc).__name__}.") from None
    probe = folder if folder.is_dir() else next((p for p in folder.parents if p.is_dir()), Path("/"))
    if not os.access(probe, os.W_OK | os.X_OK):
        raise OutputError(f"cannot use {folder}: {probe} is not writable.")
    return folder


@contextmanager
def temp_folder_beside(target: Path) -> Iterator[Path]:
    """A temporary folder next to `target` that is removed unless the caller renamed it away."""
    tmp = target.with_name(target.name + f".tmp{os.getpid()}")
    shutil.rmtree(tmp, ignore_errors=True)
    try:
        yield tmp
    finally:
        shutil.rmtree(tmp, ignore_errors=True)


__all__ = ["OutputError", "check_output_folder", "check_target", "temp_folder_beside", "write_text", "write_via_temp"]
