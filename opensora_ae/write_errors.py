"""A failed write as one line naming the file: disk full ("no space left on device") or another I/O error.

``torch.save`` reports a full disk as a ``RuntimeError`` from its zip writer (``inline_container.cc``) without an
errno, so :func:`is_disk_full` also asks the file system how much space is left.
"""

from __future__ import annotations

import errno
import shutil
from pathlib import Path

from safetensors import SafetensorError

# Less free space than this after a failed write means the disk was the cause.
NEARLY_FULL_BYTES = 1 << 20
# What the writers raise on a failed write: OSError (Python files), RuntimeError (torch.save's zip writer, PyAV),
# SafetensorError (safetensors' I/O errors).
WRITE_ERRORS = (OSError, RuntimeError, SafetensorError)


class WriteFailedError(OSError):
    """A file or folder could not be written; ``str()`` is the one-line message."""

    def __init__(self, message: str, errno_code: int = errno.EIO) -> None:
        super().__init__(errno_code, message)
        self.message = message

    def __str__(self) -> str:
        return self.message


def is_disk_full(err: BaseException, path: Path) -> bool:
    """Whether ``err``, raised while writing ``path``, means the device ran out of space."""
    if isinstance(err, OSError) and err.errno in (errno.ENOSPC, errno.EDQUOT):
        return True
    text = str(err).lower()
    if "no space left" in text or "os error 28" in text:
        return True
    try:
        return shutil.disk_usage(_existing_parent(path)).free < NEARLY_FULL_BYTES
    except OSError:
        return False


def _existing_parent(path: Path) -> Path:
    for folder in (path, *path.parents):
        if folder.exists():
            return folder
    return Path(".")


def write_failed(err: BaseException, path: Path, consequence: str) -> WriteFailedError:
    """The one-line error for ``err`` raised while writing ``path``; ``consequence`` says what was kept/removed."""
    if is_disk_full(err, path):
        return WriteFailedError(f"{path}: no space left on device; {consequence}", errno.ENOSPC)
    reason = str(err).strip().splitlines()[0] if str(err).strip() else type(err).__name__
    return WriteFailedError(f"{path}: could not be written ({reason}); {consequence}",
                            err.errno if isinstance(err, OSError) and err.errno else errno.EIO)
