"""Where an image may be read from: confinement to a root and regular files only.

Every place that opens an image named by a user's data (pair files, `score`/`eval` inputs, the
reward server) resolves the name here first. Without a root, a relative name is taken from
`base_dir` and an absolute one as it is; with a root, both must resolve (symlinks followed)
inside the root, so `../`, absolute paths elsewhere and symlinks pointing out are refused.
Only regular files are accepted: a FIFO, a device or a directory named `x.png` is refused
before it is opened (opening a FIFO for reading blocks until a writer appears, i.e. forever),
and `open_regular` re-checks the opened descriptor, so a file swapped for a FIFO between the
check and the open is refused too.

Names are not shell words: `~` is not expanded.
"""

from __future__ import annotations

import os
import stat
from typing import BinaryIO

from basereward.errors import DataError

OUTSIDE_ROOT = "image path leads outside the image root (refused)"


class ImagePathError(DataError):
    """An image name that cannot be used: `str()` is "name: reason"; `reason` alone is kept for
    callers that word the message around their own location (a pair file's `file:line`)."""

    def __init__(self, name: str, reason: str):
        super().__init__(f"{name}: {reason}")
        self.name = name
        self.reason = reason


def confine(name: str, *, base_dir: str | None = None, root: str | None = None) -> str:
    """The absolute real path of `name` (it need not exist), inside the real `root` if one is given.

    `base_dir` anchors relative names (default: `root`, else the working directory).
    """
    if not name:
        raise ImagePathError(repr(name), "empty image path")
    if "\0" in name:
        raise ImagePathError(repr(name), "image path contains a NUL byte")
    anchor = base_dir if base_dir is not None else (root if root is not None else os.getcwd())
    real = os.path.realpath(os.path.join(anchor, name))
    if root is not None:
        real_root = os.path.realpath(root)
        if os.path.commonpath([real_root, real]) != real_root:
            raise ImagePathError(name, OUTSIDE_ROOT)
    return real


def resolve_image_path(name: str, *, base_dir: str | None = None, root: str | None = None) -> str:
    """The absolute, real path of existing regular file `name`, or ImagePathError("name: reason").

    `base_dir` anchors relative names (default: `root`, else the working directory). With
    `root`, the real path must lie inside the real root.
    """
    real = confine(name, base_dir=base_dir, root=root)
    check_regular_file(real, shown=name)
    return real


def _kind(mode: int) -> str:
    if stat.S_ISDIR(mode):
        return "a directory"
    if stat.S_ISFIFO(mode):
        return "a FIFO"
    if stat.S_ISCHR(mode) or stat.S_ISBLK(mode):
        return "a device"
    if stat.S_ISSOCK(mode):
        return "a socket"
    return "not a regular file"


def _not_regular(shown: str, mode: int) -> ImagePathError:
    return ImagePathError(shown, f"not a regular file ({_kind(mode)}); refused")


def check_regular_file(path: str, *, shown: str | None = None) -> None:
    """ImagePathError unless `path` is an existing regular file (checked without opening it)."""
    shown = shown if shown is not None else path
    try:
        mode = os.stat(path).st_mode
    except FileNotFoundError:
        raise ImagePathError(shown, "image not found") from None
    except OSError as exc:
        raise ImagePathError(shown, f"unreadable image ({exc.strerror or type(exc).__name__})") from None
    if not stat.S_ISREG(mode):
        raise _not_regular(shown, mode)


def open_regular(path: str, *, shown: str | None = None) -> BinaryIO:
    """`path` opened for binary reading, refusing anything but a regular file.

    O_NONBLOCK makes opening a FIFO return at once instead of waiting for a writer; the opened
    descriptor is then checked with fstat, so no check-then-open race lets a FIFO or device in.
    """
    shown = shown if shown is not None else path
    check_regular_file(path, shown=shown)
    try:
        fd = os.open(path, os.O_RDONLY | getattr(os, "O_NONBLOCK", 0) | getattr(os, "O_BINARY", 0))
    except FileNotFoundError:
        raise ImagePathError(shown, "image not found") from None
    except OSError as exc:
        raise ImagePathError(shown, f"unreadable image ({exc.strerror or type(exc).__name__})") from None
    try:
        mode = os.fstat(fd).st_mode
        if not stat.S_ISREG(mode):
            raise _not_regular(shown, mode)
        return os.fdopen(fd, "rb")
    except BaseException:
        os.close(fd)
        raise


def check_image_root(root: str | os.PathLike[str], what: str = "--image-root") -> str:
    """`root` as given, or DataError("<what> <root>: not a directory") before any work starts."""
    root = os.fspath(root)
    if not os.path.isdir(root):
        raise DataError(f"{what} {root}: not a directory")
    return root
