# Licensed under a 3-clause BSD style license - see LICENSE.rst
"""Combination: the exposures combined with or without their cosmic rays.

* `~crcombine._combination.rules`: the per-pixel rules, their variance and the exposure map.
* `~crcombine._combination.combiner`: `~crcombine.CRCombiner` and `~crcombine.combine`.
* `~crcombine._combination.ccdproc_combiner`: the `ccdproc.Combiner` subclass.
* `~crcombine._combination.combined_file`: the combined image file.
* `~crcombine._combination.products`: the mask file and every combination in one folder.
"""
