# Licensed under a 3-clause BSD style license - see LICENSE.rst
"""Inputs: from CCDData, files, collections or dask arrays to one stack in electrons.

* `~crcombine._inputs.read`: reading and checking the exposures (`~crcombine.read_exposures`).
* `~crcombine._inputs.detector`: gain, read noise, bias and input variances in electrons.
* `~crcombine._inputs.stack`: `ExposureStack`, the whole stack in memory.
* `~crcombine._inputs.sources`: stacks read in bands of rows (files, CCDData, dask).
* `~crcombine._inputs.open`: the stack that fits the inputs and the memory limit.
* `~crcombine._inputs.premask`: pre-masking of single exposures (`~crcombine.make_mask`).
* `~crcombine._inputs.align`: offsets and alignment on a common grid.
"""
