"""Symmetric side chains (ASP, GLU, PHE, TYR, ARG): their equivalent atoms named canonically, or named as in a
reference. Slot coordinates [..., N, 15, 3] Å; the table is ``residue_constants.SYMMETRIC_SWAPS``."""
from __future__ import annotations

import numpy as np

from latcpb.geometry import residue_constants as rc


def _swappable(restype: np.ndarray, present: np.ndarray) -> np.ndarray:
    """Rows [n] of symmetric residues with every atom of the defining torsion and of the swapped pairs present."""
    quad = rc.RESTYPE_SYMMETRY_TORSION[restype]
    moved = rc.RESTYPE_SYMMETRY_SWAP[restype] != np.arange(rc.ATOMS_PER_RESIDUE)
    ok = (quad[:, 0] >= 0) & np.take_along_axis(present, quad.clip(min=0), 1).all(1) & (present | ~moved).all(1)
    return np.flatnonzero(ok)


def _renamed(flat: np.ndarray, restype: np.ndarray) -> np.ndarray:
    """[F, N, 15, 3] with every symmetric pair swapped."""
    rows = np.arange(len(restype))
    return flat[:, rows[:, None], rc.RESTYPE_SYMMETRY_SWAP[restype]]


def canonical_symmetric(slots: np.ndarray, restype: np.ndarray, present: np.ndarray) -> np.ndarray:
    """Rename the equivalent atoms of ASP, GLU, PHE, TYR and ARG so that their defining torsion lies within 90 degrees
    of its canonical centre (``residue_constants.SYMMETRIC_SWAPS``; sources name them either way).
    slots [..., N, 15, 3] Å; restype [N]; present [N, 15] bool. Returns a new array; residues missing an atom
    involved are left alone."""
    from MDAnalysis.lib.distances import calc_dihedrals

    restype = np.asarray(restype)
    quad = rc.RESTYPE_SYMMETRY_TORSION[restype]                                 # [N, 4]
    ok = _swappable(restype, present)
    if not len(ok):
        return slots.copy()
    lead = slots.shape[:-3]
    flat = slots.reshape((-1,) + slots.shape[-3:])                                # [F, N, 15, 3]
    points = [flat[:, ok, quad[ok, k]].reshape(-1, 3).astype(np.float64) for k in range(4)]
    torsion = calc_dihedrals(*points).reshape(len(flat), len(ok))              # [F, n] rad
    flip = np.zeros((len(flat), len(restype)), dtype=bool)
    offset = torsion - rc.RESTYPE_SYMMETRY_CENTRE[restype[ok]]
    flip[:, ok] = np.cos(offset) < 0
    return np.where(flip[..., None, None], _renamed(flat, restype), flat).reshape(lead + slots.shape[-3:])


def closest_symmetric(slots: np.ndarray, reference: np.ndarray, restype: np.ndarray, present: np.ndarray) -> np.ndarray:
    """Rename the equivalent atoms of each symmetric residue of ``slots`` as ``reference`` names them: the naming
    with the smaller squared distance to the reference wins (symmetry-aware RMSD, as CASP scores side chains).
    slots, reference [..., N, 15, 3] Å (same leading shape); restype [N]; present [N, 15] bool (atoms of both)."""
    restype = np.asarray(restype)
    ok = _swappable(restype, present)
    if not len(ok):
        return slots.copy()
    lead = slots.shape[:-3]
    flat = slots.reshape((-1,) + slots.shape[-3:])
    ref = reference.reshape(flat.shape)
    renamed = _renamed(flat, restype)
    weight = present[None, :, :, None]
    as_is = (((flat - ref) ** 2) * weight).sum((-1, -2))                          # [F, N]
    swapped = (((renamed - ref) ** 2) * weight).sum((-1, -2))
    flip = np.zeros(as_is.shape, dtype=bool)
    flip[:, ok] = swapped[:, ok] < as_is[:, ok]
    return np.where(flip[..., None, None], renamed, flat).reshape(lead + slots.shape[-3:])
