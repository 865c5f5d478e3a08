# Licensed under a 3-clause BSD style license - see LICENSE.rst
"""Parsers of command-line values (the ``type=`` of `crcombine.cli`'s flags).

Each turns the text of one flag into its value or raises
`argparse.ArgumentTypeError` (or `ValueError`) naming the flag and the form
it takes.
"""

import argparse
import json
import os

__all__ = []

#: Size suffixes of ``--mem_limit``.
_BYTE_UNITS = {"": 1, "b": 1, "kb": 1e3, "mb": 1e6, "gb": 1e9, "tb": 1e12,
               "kib": 2 ** 10, "mib": 2 ** 20, "gib": 2 ** 30}


def _read_list(path):
    if not os.path.exists(path):
        raise FileNotFoundError(f"--inputlist {path!r} does not exist.")
    base = os.path.dirname(path)
    names = []
    with open(path, encoding="utf-8-sig") as fh:     # UTF-8, with or without a BOM
        for line in fh:
            line = line.split("#", 1)[0].strip()
            if line:
                names.append(line if os.path.isabs(line) or os.path.exists(line)
                             else os.path.join(base, line))
    return names


def _regions(text):
    try:
        return json.loads(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"--flux_factor_regions must be a list like "
                                         f"[[1,100,1,200]] (xmin,xmax,ymin,ymax); got "
                                         f"{text!r}") from None


def _flux_factor(text):
    low = text.strip().lower()
    if low in ("none", "auto"):
        return low if low == "auto" else None
    try:
        values = json.loads(text) if text.strip().startswith("[") else \
            [float(v) for v in text.split(",")]
    except ValueError:
        raise argparse.ArgumentTypeError(f"--flux_factor must be none, auto, a number or a list "
                                         f"like [1.0,0.98,1.02]; got {text!r}") from None
    return values[0] if len(values) == 1 else values


def _bytes(text):
    """'300MB', '4GB', '2.5e8', 'auto' or 'none' as a number of bytes, 'auto' or None."""
    low = text.strip().lower()
    if low == "none":
        return None
    if low == "auto":
        return "auto"
    number = low.rstrip("kmgtib")
    try:
        value = float(number) * _BYTE_UNITS[low[len(number):]]
    except (ValueError, KeyError):
        raise argparse.ArgumentTypeError(f"--mem_limit must be a size like 300MB, 4GB or "
                                         f"2.5e8 (bytes), auto or none; got {text!r}") from None
    if value <= 0:
        raise argparse.ArgumentTypeError(f"--mem_limit must be positive; got {text!r}")
    return value


def _auto_or_number(text, flag):
    if text.lower() == "auto":
        return "auto"
    try:
        return float(text)
    except ValueError:
        raise ValueError(f"{flag} must be auto or a number; got {text!r}.") from None


def _saturation(text):
    if text in ("header", "auto"):
        return text
    try:
        return float(text)
    except ValueError:
        raise ValueError(f"--saturation must be header, auto or a number; got {text!r}.") from None


def _combinations(text):
    """``--combination``: one method or several, comma-separated; a list."""
    from ._core.methods import METHODS
    methods = [m.strip() for m in text.split(",") if m.strip()]
    unknown = [m for m in methods if m not in METHODS]
    if not methods or unknown:
        raise argparse.ArgumentTypeError(
            f"unknown combination {', '.join(unknown) or repr(text)}; give one or more of "
            f"{', '.join(METHODS)}, comma-separated.")
    if len(set(methods)) != len(methods):
        raise argparse.ArgumentTypeError(f"combination {text!r} names a method twice.")
    return methods
