"""Ramachandran and rotamer wells fitted on the training set, and the outliers they define.

Table ``data/wells.json`` (fitted by ``python -m latcpb.tools.fit_wells``): for each Ramachandran class
(GLY, PRO, prePRO = residue before a proline other than GLY/PRO, general = all others) a 36 x 36 histogram of
(phi, psi) and for each residue type with side-chain torsions a histogram of chi1 (36 bins; SER, THR, VAL, CYS)
or of (chi1, chi2) (36 x 36). Bins are 10°, histograms are smoothed by a Gaussian of one bin (periodic) and
scaled to a maximum of 1 ("density").

Rule (documented in the table too): a residue is an *outlier* when the density of its bin is below the level
that excludes 0.5 % of the training residues of its class (the densities at the training points, 0.5 % quantile),
and *not favoured* ("allowed" or worse) below the level that excludes 2 %. chi2 of ASP, PHE, TYR is folded to
the 180° period of their symmetric atoms (centre 0° / 90° / 90°).
Shapes: torsions in radians [N]; masks [N] bool.
"""
from __future__ import annotations

import json
from functools import lru_cache
from pathlib import Path

import numpy as np

from latcpb.geometry import residue_constants as rc

DATA_PATH = Path(__file__).resolve().parent / "data" / "wells.json"
N_BINS = 36
OUTLIER_FRACTION = 0.005   # outlier: density below the level excluding 0.5 % of train
ALLOWED_FRACTION = 0.02    # not favoured: density below the level excluding 2 % of train
SMOOTHING_BINS = 1.0
RAMA_CLASSES = ("general", "GLY", "PRO", "prePRO")
SYMMETRIC_CHI2_CENTRE = {"ASP": 0.0, "PHE": 90.0, "TYR": 90.0}
ROTAMER_RESIDUES = tuple(r for r in rc.RESTYPES if rc.CHI_ATOMS[r])


def rama_class(restype: np.ndarray, next_restype: np.ndarray) -> np.ndarray:
    """[N] index into RAMA_CLASSES; next_restype [N] type of the bonded next residue (-1 where none)."""
    gly, pro = rc.RESTYPE_INDEX["GLY"], rc.RESTYPE_INDEX["PRO"]
    out = np.zeros(len(restype), dtype=np.int64)
    out[next_restype == pro] = RAMA_CLASSES.index("prePRO")
    out[restype == pro] = RAMA_CLASSES.index("PRO")
    out[restype == gly] = RAMA_CLASSES.index("GLY")
    return out


def following_restype(restype: np.ndarray, previous: np.ndarray) -> np.ndarray:
    """[N] type of the residue bonded after each residue (-1 where none), for ``rama_class``; previous [N]: index of
    the residue bonded before each one (-1 at chain starts, ``validity.chain_predecessors``)."""
    following = np.full(len(restype), -1, dtype=np.int64)
    bonded = previous >= 0
    following[previous[bonded]] = restype[bonded]
    return following


def fold_chi2(chi2: np.ndarray, restype: np.ndarray) -> np.ndarray:
    """chi2 [..., N] rad folded to the 180° period for ASP, PHE, TYR (within 90° of their centre)."""
    out = np.array(chi2, dtype=np.float64, copy=True)
    for name, centre in SYMMETRIC_CHI2_CENTRE.items():
        sel = restype == rc.RESTYPE_INDEX[name]
        c = np.radians(centre)
        out[..., sel] = (out[..., sel] - c + np.pi / 2) % np.pi - np.pi / 2 + c
    return out


def _bin(angle: np.ndarray) -> np.ndarray:
    """Bin index 0..35 of angles (rad) over [-180°, 180°)."""
    deg = (np.degrees(angle) + 180.0) % 360.0
    return np.minimum((deg // (360.0 / N_BINS)).astype(np.int64), N_BINS - 1)


def smoothed_density(*angles: np.ndarray) -> np.ndarray:
    """Histogram of 1 or 2 angle arrays (rad) [36] or [36, 36], periodic Gaussian smoothing of one bin, max 1,
    rounded to 5 decimals (as the table stores it)."""
    from scipy.ndimage import gaussian_filter

    shape = (N_BINS,) * len(angles)
    counts = np.zeros(shape)
    np.add.at(counts, tuple(_bin(a) for a in angles), 1.0)
    dens = gaussian_filter(counts, SMOOTHING_BINS, mode="wrap")
    return np.round(dens / max(dens.max(), 1e-300), 5)


def density_levels(density: np.ndarray, *angles: np.ndarray) -> dict:
    """Outlier and allowed levels: densities at the training points, 0.5 % and 2 % quantiles."""
    at = density[tuple(_bin(a) for a in angles)]
    if at.size == 0:  # no training residue of the class: nothing is an outlier
        return {"outlier": 0.0, "allowed": 0.0, "n": 0}
    # "lower": a level that is itself a training density, so at most the fraction lies strictly below it
    return {"outlier": float(np.quantile(at, OUTLIER_FRACTION, method="lower")),
            "allowed": float(np.quantile(at, ALLOWED_FRACTION, method="lower")), "n": int(len(at))}


@lru_cache(maxsize=1)
def load_wells(path: str | None = None) -> dict:
    """The wells table as numpy arrays: {"rama": {class: (density, levels)}, "rotamer": {resname: ...}}."""
    with open(path or DATA_PATH, encoding="utf-8") as fh:
        raw = json.load(fh)
    out = {"source": raw.get("source"), "rama": {}, "rotamer": {}}
    for group in ("rama", "rotamer"):
        for key, item in raw[group].items():
            out[group][key] = (np.asarray(item["density"], dtype=np.float64), item["levels"])
    return out


def ramachandran(phi, psi, mask, restype, next_restype, wells=None) -> dict:
    """Ramachandran outliers and not-favoured residues [N] bool (only where phi and psi are defined)."""
    wells = wells or load_wells()
    cls = rama_class(restype, next_restype)
    outlier = np.zeros(len(restype), dtype=bool)
    allowed = np.zeros(len(restype), dtype=bool)
    for k, name in enumerate(RAMA_CLASSES):
        sel = mask & (cls == k)
        if not sel.any() or name not in wells["rama"]:
            continue
        density, levels = wells["rama"][name]
        d = density[_bin(phi[sel]), _bin(psi[sel])]
        outlier[sel] = d < levels["outlier"]
        allowed[sel] = d < levels["allowed"]
    return {"outlier": outlier, "not_favoured": allowed, "scored": mask.copy()}


def rotamers(chi: np.ndarray, chi_mask: np.ndarray, restype: np.ndarray, wells=None) -> dict:
    """Rotamer outliers [N] bool; chi [N, 4] rad and chi_mask [N, 4] from ``torsions.chi_angles``. A residue is
    scored when all the torsions of its table (chi1, or chi1 and chi2) are defined."""
    wells = wells or load_wells()
    chi2 = fold_chi2(chi[:, 1], restype)
    outlier = np.zeros(len(restype), dtype=bool)
    allowed = np.zeros(len(restype), dtype=bool)
    scored = np.zeros(len(restype), dtype=bool)
    for name, (density, levels) in wells["rotamer"].items():
        sel = restype == rc.RESTYPE_INDEX[name]
        two = density.ndim == 2
        sel &= chi_mask[:, 0] & (chi_mask[:, 1] if two else True)
        if not sel.any():
            continue
        idx = (_bin(chi[sel, 0]), _bin(chi2[sel])) if two else (_bin(chi[sel, 0]),)
        d = density[idx]
        outlier[sel] = d < levels["outlier"]
        allowed[sel] = d < levels["allowed"]
        scored |= sel
    return {"outlier": outlier, "not_favoured": allowed, "scored": scored}
