# Licensed under a 3-clause BSD style license - see LICENSE.rst
"""CRMasks, the result of the detection, and the labelling of CR features."""

import uuid as uuid_module

import numpy as np
from astropy.table import Table
from scipy import ndimage

from .._core.images import EIGHT_CONNECTED
from . import mask_file

__all__ = ['CRMasks']


class CRMasks:
    """Cosmic-ray masks of N equivalent exposures (the result of `CRMaskBuilder.build`).

    All masks follow astropy: True = flagged.

    Attributes
    ----------
    mediancr : `~numpy.ndarray`, shape (ny, nx), bool
        Pixels whose median is CR-contaminated (MEDIANCR), dilated.
    meancrt : `~numpy.ndarray`, shape (ny, nx), bool
        Pixels whose mean is CR-contaminated (MEANCRT), dilated;
        ``mediancr`` is a subset.
    crmask : `~numpy.ndarray`, shape (N, ny, nx), bool
        Per-exposure masks CRMASK1..N.
    meancr : `~numpy.ndarray`, shape (ny, nx), bool
        CRs left in the ``meancr`` combination (MEANCR), not dilated.
    flux_factor : `~numpy.ndarray`, shape (N,), float
    flux_factor_uncertainty : `~numpy.ndarray` or None
        Standard errors when the flux factors were estimated (``'auto'``).
    boundaries : dict of `~crcombine.DetectionBoundary`
        By statistic: ``'median'``, ``'mean'`` and, with
        ``crmask_method='mm'``, ``'single'``.  Empty for masks
        read from a file.
    features : `~astropy.table.Table` or None
        The CR features of MEDIANCR, most certain first: ``label`` (in
        ``labels``), ``n_pixels``, ``n_seeds`` (pixels flagged before
        dilation), ``xcentroid``, ``ycentroid`` (0-based pixel
        coordinates), ``max_distance`` (largest ``y - B(x)`` of the feature,
        electrons).
    labels : `~numpy.ndarray` (ny, nx), int or None
        Feature labels of MEDIANCR (0 = none).
    parameters : dict
        Parameters used (including the seed and the resolved
        ``cr_coincidences``).
    uuid : str
        Identifier written in the mask file and in every combination made
        with these masks.
    diagram : dict or None
        ``'simulated'`` and ``'data'`` MM-diagram histograms, for plotting.
    """

    def __init__(self, *, mediancr, meancrt, crmask, meancr=None, flux_factor=None,
                 flux_factor_uncertainty=None, boundaries=None, features=None, labels=None,
                 parameters=None, uuid=None, diagram=None):
        self.mediancr = np.asarray(mediancr, dtype=bool)
        self.meancrt = np.asarray(meancrt, dtype=bool)
        self.crmask = np.asarray(crmask, dtype=bool)
        shape = self.mediancr.shape
        if self.crmask.ndim != 3 or self.crmask.shape[1:] != shape or \
                self.meancrt.shape != shape:
            raise ValueError(f"mask shapes do not agree: MEDIANCR {shape}, MEANCRT "
                             f"{self.meancrt.shape}, CRMASK stack {self.crmask.shape}.")
        self.meancr = (np.zeros(shape, dtype=bool) if meancr is None
                       else np.asarray(meancr, dtype=bool))
        n = self.crmask.shape[0]
        self.flux_factor = (np.ones(n) if flux_factor is None
                            else np.asarray(flux_factor, dtype=float))
        if self.flux_factor.shape != (n,):
            raise ValueError(f"{n} CRMASK planes but {self.flux_factor.size} flux factors.")
        self.flux_factor_uncertainty = flux_factor_uncertainty
        self.boundaries = dict(boundaries or {})
        self.features = features
        self.labels = labels
        self.parameters = dict(parameters or {})
        self.uuid = str(uuid) if uuid is not None else str(uuid_module.uuid4())
        self.diagram = diagram

    @property
    def n_exposures(self):
        return self.crmask.shape[0]

    @property
    def shape(self):
        return self.mediancr.shape

    @property
    def seed(self):
        return self.parameters.get("seed")

    def __repr__(self):
        return (f"<CRMasks {self.n_exposures} x {self.shape}: MEDIANCR "
                f"{int(self.mediancr.sum())} px, MEANCRT {int(self.meancrt.sum())} px, "
                f"CRMASK {[int(m.sum()) for m in self.crmask]} px, uuid {self.uuid}>")

    def summary(self):
        """Counts per mask: flagged pixels and CR features (8-connected groups).

        Returns
        -------
        dict
            ``{'MEDIANCR': (pixels, features), 'MEANCRT': ..., 'CRMASK1': ..., 'MEANCR': ...}``
        """
        out = {}
        planes = [("MEDIANCR", self.mediancr), ("MEANCRT", self.meancrt)]
        planes += [(f"CRMASK{i + 1}", m) for i, m in enumerate(self.crmask)]
        planes.append(("MEANCR", self.meancr))
        for name, mask in planes:
            out[name] = (int(mask.sum()), int(ndimage.label(mask, EIGHT_CONNECTED)[1]))
        return out

    def check_compatible(self, n_exposures, shape):
        """Raise ValueError unless these masks fit ``n_exposures`` images of ``shape``."""
        if self.n_exposures != n_exposures or self.shape != tuple(shape):
            raise ValueError(f"the masks are for {self.n_exposures} exposures of shape "
                             f"{self.shape}, but the inputs are {n_exposures} of shape "
                             f"{tuple(shape)}; use the masks computed for these inputs.")

    def write(self, path, *, overwrite=False):
        """Write the masks to a numina-compatible ``crmasks.fits``.

        See `crcombine.io.write_crmasks`.
        """
        mask_file.write_crmasks(self, path, overwrite=overwrite)

    @classmethod
    def read(cls, path):
        """Read masks written by crcombine or by numina-crmasks.

        See `crcombine.io.read_crmasks`.
        """
        return cls(**mask_file.read_mask_fields(path))


def label_features(mask, distance, seeds):
    """Label the 8-connected CR features of ``mask`` and rank them.

    Parameters
    ----------
    mask : `~numpy.ndarray` (ny, nx), bool
    seeds : `~numpy.ndarray` (ny, nx), bool
        The pixels flagged before dilation (counted per feature).
    distance : `~numpy.ndarray` (ny, nx), float
        ``y - B(x)`` (electrons); its maximum over a feature ranks it.

    Returns
    -------
    labels : `~numpy.ndarray` (ny, nx), int32
    table : `~astropy.table.Table`
        One row per feature, sorted by decreasing ``max_distance``.
    """
    labels, n = ndimage.label(mask, EIGHT_CONNECTED)
    index = np.arange(1, n + 1)
    # reductions over the flagged pixels only (ndimage's label reductions scan the image)
    ys, xs = np.nonzero(labels)
    lab = labels[ys, xs]
    npix = np.bincount(lab, minlength=n + 1)[1:]
    nseed = np.bincount(lab, weights=seeds[ys, xs], minlength=n + 1)[1:]
    with np.errstate(invalid="ignore", divide="ignore"):
        centroids = np.c_[np.bincount(lab, weights=ys, minlength=n + 1)[1:] / npix,
                          np.bincount(lab, weights=xs, minlength=n + 1)[1:] / npix]
    dist = np.full(n + 1, -np.inf)
    np.maximum.at(dist, lab, np.nan_to_num(distance[ys, xs], nan=-np.inf))
    dist = dist[1:]
    order = np.argsort(-np.asarray(dist, dtype=float), kind="stable")
    table = Table({"label": index[order].astype(np.int32),
                   "n_pixels": np.asarray(npix, dtype=np.int64)[order],
                   "n_seeds": np.asarray(nseed, dtype=np.int64)[order],
                   "xcentroid": centroids[order, 1], "ycentroid": centroids[order, 0],
                   "max_distance": np.asarray(dist, dtype=float)[order]})
    table["max_distance"].unit = "electron"
    return labels.astype(np.int32, copy=False), table
