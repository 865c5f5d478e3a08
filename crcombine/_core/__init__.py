# Licensed under a 3-clause BSD style license - see LICENSE.rst
"""The core of crcombine: what every stage uses, importing nothing else of crcombine.

* `~crcombine._core.noise`: the noise model of an exposure and of the median.
* `~crcombine._core.statistics`: the stack sorted once and its order statistics.
* `~crcombine._core.images`: image operations (derivative, structure, dilation, fill).
* `~crcombine._core.tiles`: the tiling engine (bands of rows, memory model, dask).
* `~crcombine._core.validation`: the shared validators of numbers and detector values.
* `~crcombine._core.files`: atomic, non-clobbering writes.
* `~crcombine._core.methods`: the names of the combination methods.
"""
