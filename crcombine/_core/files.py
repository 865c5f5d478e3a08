# Licensed under a 3-clause BSD style license - see LICENSE.rst
"""Writing files atomically and never over an existing file without ``overwrite``.

Every file is written to a temporary file in the target directory, then
renamed, so an interruption never leaves a partial file under the final name.
"""

import contextlib
import os
import tempfile

__all__ = []


def check_output_path(path, *, overwrite, argument="output"):
    """Raise before any work if ``path`` cannot be written.

    Raises
    ------
    FileExistsError
        ``path`` exists and ``overwrite`` is False.
    FileNotFoundError
        Its directory does not exist.
    PermissionError
        Its directory is not writable.
    """
    path = os.fspath(path)
    directory = os.path.dirname(os.path.abspath(path))
    if os.path.exists(path) and not overwrite:
        raise FileExistsError(f"{argument} {path!r} exists; use overwrite=True (--overwrite) "
                              "to replace it, or choose another name.")
    if not os.path.isdir(directory):
        raise FileNotFoundError(f"{argument}: directory {directory!r} does not exist; create it "
                                "first.")
    if not os.access(directory, os.W_OK):
        raise PermissionError(f"{argument}: directory {directory!r} is not writable.")
    return path


@contextlib.contextmanager
def atomic_file(path, mode="wb", *, overwrite=False, argument="output"):
    """Open a temporary file beside ``path``; rename it to ``path`` when the block succeeds.

    An interruption or an exception leaves no file under the final name (the
    temporary file is removed on an exception).  ``path`` is checked with
    `check_output_path` before anything is written.
    """
    path = check_output_path(path, overwrite=overwrite, argument=argument)
    fd, tmp = tempfile.mkstemp(prefix=".crcombine-", suffix=".tmp",
                               dir=os.path.dirname(os.path.abspath(path)))
    try:
        with os.fdopen(fd, mode) as fh:
            yield fh
            fh.flush()
            os.fsync(fh.fileno())
        os.replace(tmp, path)
    except BaseException:
        if os.path.exists(tmp):
            os.unlink(tmp)
        raise


def write_atomic(hdul, path, *, overwrite=False, argument="output"):
    """Write an HDUList to ``path`` through a temporary file and a rename."""
    with atomic_file(path, overwrite=overwrite, argument=argument) as fh:
        hdul.writeto(fh)


def write_text(text, path, *, overwrite=False):
    """Write a text file atomically (temporary file + rename)."""
    with atomic_file(path, "w", overwrite=overwrite) as fh:
        fh.write(text)
