"""Periodic images: CG chains wrapped across the box made whole with MDAnalysis, on a private copy of the beads.

The user's Universe is never changed: the beads are copied into a small Universe of their own, with bonds along
each chain (bead i to bead i+1), and ``AtomGroup.unwrap(compound="fragments")`` (``lib.mdamath.make_whole``) makes
each chain whole there, its first bead kept in place.
"""
from __future__ import annotations

import warnings

import MDAnalysis as mda
import numpy as np


def has_box(dimensions) -> bool:
    """True for a usable periodic box [6] (positive lengths), False for None or zeros."""
    if dimensions is None:
        return False
    dimensions = np.asarray(dimensions, dtype=np.float64)
    return bool(np.all(np.isfinite(dimensions)) and np.all(dimensions[:3] > 0))


def minimum_image_spacing(xyz: np.ndarray, box) -> np.ndarray:
    """Distances [N-1] Å between consecutive points of xyz [N, 3] under the minimum-image convention of ``box``
    (plain distances when there is no box)."""
    if not has_box(box):
        return np.linalg.norm(xyz[1:] - xyz[:-1], axis=-1)
    from MDAnalysis.lib.distances import calc_bonds

    return calc_bonds(xyz[:-1].astype(np.float64), xyz[1:].astype(np.float64), box=np.asarray(box, np.float64))


class ChainUnwrapper:
    """Makes the chains of one bead per residue whole in each frame.

    chain_index [N] int: chain of every bead (contiguous). ``whole(xyz [N, 3] Å, box [6]) -> [N, 3]``.
    """

    def __init__(self, chain_index: np.ndarray):
        chain_index = np.asarray(chain_index)
        n = len(chain_index)
        bonded = np.flatnonzero(chain_index[1:] == chain_index[:-1])
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            self._u = mda.Universe.empty(n, n_residues=n, atom_resindex=np.arange(n), trajectory=True)
            self._u.add_TopologyAttr("bonds", np.stack([bonded, bonded + 1], axis=1) if len(bonded) else [])

    def whole(self, xyz: np.ndarray, box) -> np.ndarray:
        if not has_box(box):
            return np.asarray(xyz, dtype=np.float32).copy()
        atoms = self._u.atoms
        atoms.positions = xyz
        self._u.dimensions = np.asarray(box, dtype=np.float32)
        atoms.unwrap(compound="fragments", reference=None, inplace=True)
        return atoms.positions.copy()
