# Licensed under a 3-clause BSD style license - see LICENSE.rst
"""Writing files atomically and never over an existing file without ``overwrite``.

Every file is written to a temporary file in the target directory, then
renamed (or, when nothing may be replaced, hard-linked), so an interruption
never leaves a partial file under the final name; only regular files are
replaced, and the modes are those astropy's writers give.
"""

import contextlib
import os
import stat
import tempfile

__all__ = []


def check_output_path(path, *, overwrite, argument="output"):
    """Raise before any work if ``path`` cannot be written.

    Raises
    ------
    FileExistsError
        ``path`` exists and ``overwrite`` is False.
    IsADirectoryError
        ``path`` is a directory.
    ValueError
        ``path`` exists and is not a regular file (a device, a FIFO, a socket):
        crcombine replaces regular files only.
    FileNotFoundError
        Its directory does not exist.
    PermissionError
        Its directory is not writable.
    """
    path = os.fspath(path)
    directory = os.path.dirname(os.path.abspath(path))
    if os.path.isdir(path):
        raise IsADirectoryError(f"{argument} {path!r} is a directory; give a file name.")
    if os.path.lexists(path):
        if not overwrite:
            raise FileExistsError(f"{argument} {path!r} exists; use overwrite=True "
                                  "(--overwrite) to replace it, or choose another name.")
        if not stat.S_ISREG(os.stat(path).st_mode):
            raise ValueError(f"{argument} {path!r} is not a regular file (a device, FIFO or "
                             "socket); crcombine replaces regular files only: choose a file "
                             "name.")
    if not os.path.isdir(directory):
        raise FileNotFoundError(f"{argument}: directory {directory!r} does not exist; create it "
                                "first.")
    if not os.access(directory, os.W_OK):
        raise PermissionError(f"{argument}: directory {directory!r} is not writable.")
    return path


#: Temporary files are ``.crcombine-<pid>-<random>.tmp`` beside their final name.
TEMP_PREFIX = ".crcombine-"


def sweep_temporary_files(directory):
    """Remove the temporary files of crcombine processes that no longer run.

    A process killed while writing (SIGKILL, a power cut) cannot remove its
    temporary file; the next write into the directory does, when the process
    named in the file is gone.  Files of running processes are left alone.
    """
    try:
        entries = os.listdir(directory)
    except OSError:
        return
    for name in entries:
        if not (name.startswith(TEMP_PREFIX) and name.endswith(".tmp")):
            continue
        pid = name[len(TEMP_PREFIX):].split("-", 1)[0]
        if not pid.isdigit() or _running(int(pid)):
            continue
        with contextlib.suppress(OSError):
            os.unlink(os.path.join(directory, name))


def _running(pid):
    if os.name == "nt":      # os.kill would end the process there: never sweep
        return True
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except (PermissionError, OSError):
        return True
    return True


def _current_umask():
    """The process's umask, read without changing it where the system tells it."""
    try:
        with open("/proc/self/status") as fh:
            for line in fh:
                if line.startswith("Umask:"):
                    return int(line.split()[1], 8)
    except (OSError, ValueError):
        pass
    mask = os.umask(0o022)  # no other way to read it: set it back at once
    os.umask(mask)
    return mask


def _final_mode(path):
    """The mode of the file written to ``path``: the replaced file's, else
    ``0o666`` less the umask (as ``open`` and astropy's ``writeto`` give)."""
    try:
        return stat.S_IMODE(os.stat(path).st_mode)
    except FileNotFoundError:
        return 0o666 & ~_current_umask()


@contextlib.contextmanager
def atomic_file(path, mode="wb", *, overwrite=False, argument="output"):
    """Open a temporary file beside ``path``; move it to ``path`` when the block succeeds.

    An interruption or an exception leaves no file under the final name (the
    temporary file is removed on an exception).  ``path`` is checked with
    `check_output_path` before anything is written.  The file gets the mode
    of the file it replaces, or the user's umask applied to 0o666.  Without
    ``overwrite`` the final step is a hard link, which fails if ``path`` has
    appeared meanwhile (another writer): nothing is replaced then.
    """
    path = check_output_path(path, overwrite=overwrite, argument=argument)
    directory = os.path.dirname(os.path.abspath(path))
    sweep_temporary_files(directory)
    fd, tmp = tempfile.mkstemp(prefix=f"{TEMP_PREFIX}{os.getpid()}-", suffix=".tmp",
                               dir=directory)
    os.close(fd)
    try:
        with open(tmp, mode) as fh:       # a named file object, as astropy's writers want
            yield fh
            fh.flush()
            os.fsync(fh.fileno())
        os.chmod(tmp, _final_mode(path))
        if overwrite:
            check_output_path(path, overwrite=True, argument=argument)
            os.replace(tmp, path)
        else:
            try:
                os.link(tmp, path)          # exclusive: fails if path exists
            except FileExistsError:
                raise FileExistsError(f"{argument} {path!r} was created by another program "
                                      "while crcombine was writing it; nothing was replaced. "
                                      "Use overwrite=True (--overwrite) to replace it.") from None
            except OSError:                 # a file system without hard links
                if os.path.lexists(path):
                    raise
                os.replace(tmp, path)
    finally:
        if os.path.lexists(tmp):
            os.unlink(tmp)


def write_atomic(hdul, path, *, overwrite=False, argument="output"):
    """Write an HDUList to ``path`` through a temporary file and a rename."""
    with atomic_file(path, overwrite=overwrite, argument=argument) as fh:
        hdul.writeto(fh)


def write_text(text, path, *, overwrite=False):
    """Write a text file atomically (temporary file + rename)."""
    with atomic_file(path, "w", overwrite=overwrite) as fh:
        fh.write(text)
