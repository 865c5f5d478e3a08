# Licensed under a 3-clause BSD style license - see LICENSE.rst
"""Detection: the M.M.Cosmic masks of a stack (`~crcombine.CRMaskBuilder` → `~crcombine.CRMasks`).

In the order of the pipeline (:doc:`/architecture`):

* `~crcombine._detection.options`: the detection options, validated in one place.
* `~crcombine._detection.levels`: flux factors and over-dispersion from the data.
* `~crcombine._detection.simulate`: the simulated null distribution of the MM diagram.
* `~crcombine._detection.boundary`: the detection boundaries.
* `~crcombine._detection.diagram`: the per-band steps of the diagram: range, histograms, seeds.
* `~crcombine._detection.comparison`: each exposure against the robust reference.
* `~crcombine._detection.psfmatch`: kernels and PSF-matched predictions.
* `~crcombine._detection.matched`: the comparison with the predictions.
* `~crcombine._detection.crmasks`: CRMASK1..N and MEANCR of a band.
* `~crcombine._detection.lacosmic`: the auxiliary single-exposure detector.
* `~crcombine._detection.masks`, `~crcombine._detection.mask_file`: the result and its file.
* `~crcombine._detection.builder`: `~crcombine.CRMaskBuilder`, which runs the steps.
"""
