# Licensed under a 3-clause BSD style license - see LICENSE.rst
"""The names of the combination methods (no imports: the command line reads them)."""

__all__ = []


#: Methods that need cosmic-ray masks.
CR_METHODS = ("mediancr", "meancrt", "meancr", "meancr2")


#: All combination methods, in the order of :ref:`algorithm-combinations`.
METHODS = ("median", "mean", "min") + CR_METHODS


def check_method(method):
    if method not in METHODS:
        raise ValueError(f"method must be one of {'/'.join(METHODS)}; got {method!r}.")
    return method
