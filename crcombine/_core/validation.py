# Licensed under a 3-clause BSD style license - see LICENSE.rst
"""Shared validators: numbers and detector values, with messages that name the argument."""

import math
import numbers

import numpy as np
from astropy import units as u

__all__ = []


def _is_real(value):
    return isinstance(value, numbers.Real) and not isinstance(value, bool)


def _check_int(name, value, *, minimum):
    if isinstance(value, bool) or not isinstance(value, numbers.Integral):
        raise TypeError(f"{name} must be an integer >= {minimum}; got {value!r}.")
    if value < minimum:
        raise ValueError(f"{name} must be an integer >= {minimum}; got {value}.")
    return int(value)


def _check_real(name, value, *, minimum=None, strict=False):
    if not _is_real(value) or not math.isfinite(value):
        raise TypeError(f"{name} must be a finite number; got {value!r}.")
    if minimum is not None and (value <= minimum if strict else value < minimum):
        relation = ">" if strict else ">="
        raise ValueError(f"{name} must be {relation} {minimum}; got {value}.")
    return float(value)


def check_detector_value(name, value, *, positive=False, non_negative=False):
    """Check a gain, read noise or bias: a number, an array or a Quantity.

    Only the values are checked here (finite, sign); units and shapes are
    checked against the data in `crcombine._inputs.detector.detector_arrays`.

    Raises
    ------
    TypeError
        If ``value`` is not numeric.
    ValueError
        If it is non-finite, or violates the sign constraint.
    """
    raw = value.value if isinstance(value, u.Quantity) else value
    try:
        arr = np.asarray(raw, dtype=float)
    except (TypeError, ValueError):
        raise TypeError(f"{name} must be a number, an array or an astropy Quantity; "
                        f"got {value!r}.") from None
    if arr.size == 0:
        raise ValueError(f"{name} is empty; give a number or an array of the image shape.")
    if not np.all(np.isfinite(arr)):
        raise ValueError(f"{name} must be finite everywhere; it holds NaN or infinite values.")
    if positive and np.any(arr <= 0):
        raise ValueError(f"{name} must be > 0; got a minimum of {arr.min()!r}.")
    if non_negative and np.any(arr < 0):
        raise ValueError(f"{name} must be >= 0; got a minimum of {arr.min()!r}.")
    return value


def scalar_or_none(value):
    """``float(value)`` for a scalar, None for an image (a header keyword records scalars)."""
    return float(value) if np.ndim(value) == 0 else None


def header_text(text, length=68):
    """``text`` as a FITS header value: printable ASCII, at most ``length`` characters.

    Characters outside printable ASCII (file names in UTF-8) become
    ``\\uXXXX`` escapes, which FITS headers can hold and people can read back.
    """
    out = str(text).encode("ascii", "backslashreplace").decode("ascii")
    out = "".join(c if 32 <= ord(c) < 127 else f"\\x{ord(c):02x}" for c in out)
    return out[:length]
