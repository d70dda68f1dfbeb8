"""Hydrogens: ``Modeller.addHydrogens`` once per system (protonation from the input's names, pH and H-bonds), then
a fast per-frame rebuild of every hydrogen from its local heavy-atom frame (``HydrogenPlacer``).

Positions are Å [A, 3] numpy arrays; nm only in the Modeller call.
"""
from __future__ import annotations

import logging
import random

import numpy as np
import openmm as mm
import openmm.app as app
import openmm.unit as unit

from latcpb.errors import LatcpbInputError
from latcpb_openmm.convert import HeavyStructure, heavy_structure
from latcpb_openmm.forcefields import check_residues, load_forcefield

log = logging.getLogger(__name__)


class DegenerateGeometryError(LatcpbInputError):
    """A structure whose geometry (bonded atoms on top of each other) leaves no way to place its hydrogens."""


DEGENERATE_SUM = 1e-3     # Å; |sum of bond vectors| below this makes Modeller divide by zero
NUDGE = 0.05              # Å, sideways shift of such a parent atom while hydrogens are placed
COINCIDENT = 0.01         # Å; bonded heavy atoms closer than this cannot be given hydrogens


def _degenerate_parents(hs: HeavyStructure, xyz: np.ndarray):
    """Heavy atoms whose bond vectors to their heavy neighbours sum to ~0 (straight N between C and CA of a
    straight CA trace, or an atom on top of its only neighbour): Modeller's first H guess divides by that norm.

    Returns (indices [K], coincident bonded pairs [(i, j)]).
    """
    neighbours = {a.index: [] for a in hs.topology.atoms()}
    for a, b in hs.topology.bonds():
        neighbours[a.index].append(b.index)
        neighbours[b.index].append(a.index)
    bad, coincident = [], []
    for i, nb in neighbours.items():
        if not nb:
            continue
        vectors = xyz[i] - xyz[nb]
        for j, v in zip(nb, vectors):
            if i < j and np.linalg.norm(v) < COINCIDENT:
                coincident.append((i, j))
        if np.linalg.norm(vectors.sum(axis=0)) < DEGENERATE_SUM:
            bad.append(i)
    return np.asarray(bad, dtype=np.int64), coincident


def _nudged(xyz: np.ndarray, parents: np.ndarray, neighbours_of) -> np.ndarray:
    """Copy of ``xyz`` with each parent moved NUDGE Å perpendicular to its first bond (a fixed direction)."""
    out = xyz.copy()
    for i in parents:
        nb = neighbours_of(i)
        axis = xyz[nb[0]] - xyz[i] if nb else np.array([1.0, 0.0, 0.0])
        trial = np.array([0.0, 0.0, 1.0]) if abs(axis[2]) < 0.9 * np.linalg.norm(axis) else np.array([1.0, 0, 0])
        side = np.cross(axis, trial)
        norm = np.linalg.norm(side)
        side = side / norm if norm > 1e-9 else np.array([1.0, 0.0, 0.0])
        out[i] = xyz[i] + NUDGE * side
    return out


def add_hydrogens(hs: HeavyStructure, heavy_xyz: np.ndarray, forcefield: app.ForceField | None = None, ph=7.0,
                  variants=None, seed=0):
    """Hydrogens on a heavy-atom topology with ``Modeller.addHydrogens`` (protonation by pH and H-bonds).

    heavy_xyz [M, 3] Å positions of ``hs.topology``; ``variants`` (per residue, None = OpenMM decides) defaults to
    the name hints of ``hs``. Heavy atoms whose bond vectors cancel (straight segments, as in CG start structures)
    are shifted 0.05 Å sideways while Modeller guesses the hydrogens (it would divide by zero) and put back after;
    bonded atoms on top of each other (< 0.01 Å) are refused with ``LatcpbInputError`` naming the residue.
    Modeller draws from Python's ``random``; it is seeded with ``seed`` and the caller's random state restored, and
    its hydrogen minimisation runs on the Reference platform: the same input gives the same hydrogens in every
    process (a multi-threaded platform's last-bit noise would grow into different relaxed frames).
    The box of ``hs.topology`` is kept. Returns (topology with H, positions [T, 3] Å, heavy index [M] into the new
    topology, variants used). Raises ``LatcpbInputError`` naming residues without hydrogen definitions or
    force-field templates.
    """
    heavy_xyz = np.asarray(heavy_xyz, dtype=np.float64)
    bad, coincident = _degenerate_parents(hs, heavy_xyz)
    if coincident:
        atoms = list(hs.topology.atoms())
        shown = ", ".join(f"{atoms[i].name}-{atoms[j].name} of {hs.residue_labels[atoms[i].residue.index]}"
                          for i, j in coincident[:5])
        raise DegenerateGeometryError(f"bonded atoms on top of each other (< {COINCIDENT} Å): {shown}"
                               + (f" and {len(coincident) - 5} more" if len(coincident) > 5 else "")
                               + "; cannot place hydrogens")
    guess_xyz = heavy_xyz
    if len(bad):
        neighbours = {}
        for a, b in hs.topology.bonds():
            neighbours.setdefault(a.index, []).append(b.index)
            neighbours.setdefault(b.index, []).append(a.index)
        guess_xyz = _nudged(heavy_xyz, bad, lambda i: neighbours.get(i, []))
        atoms = list(hs.topology.atoms())
        log.info("straight geometry at %d atoms (first: %s of %s): shifted %.2f Å to place hydrogens", len(bad),
                 atoms[bad[0]].name, hs.residue_labels[atoms[bad[0]].residue.index], NUDGE)
    modeller = app.Modeller(hs.topology, unit.Quantity(guess_xyz * 0.1, unit.nanometer))
    state = random.getstate()
    random.seed(seed)
    try:
        used = modeller.addHydrogens(None, pH=ph, variants=list(variants if variants is not None else hs.variants),
                                     platform=mm.Platform.getPlatformByName("Reference"))
    except (ValueError, KeyError) as err:  # OpenMM: unknown variant, bad residue
        raise LatcpbInputError(f"cannot add hydrogens: {err}") from err
    except ZeroDivisionError as err:  # a degenerate case the check above did not foresee: still a clear error
        raise DegenerateGeometryError("cannot add hydrogens: degenerate geometry (atoms collinear or on top of each "
                               "other)") from err
    finally:
        random.setstate(state)
    top = modeller.topology
    if forcefield is not None:
        check_residues(top, hs.residue_labels, forcefield)
    pos = np.asarray(modeller.positions.value_in_unit(unit.nanometer), dtype=np.float64) * 10.0
    # heavy atoms keep their order; map them by (residue ordinal, name)
    where = {(a.residue.index, a.name): a.index for a in top.atoms()}
    heavy_index = np.array([where[(a.residue.index, a.name)] for a in hs.topology.atoms()], dtype=np.int64)
    pos[heavy_index] = heavy_xyz  # the nudged atoms go back to their place
    return top, pos, heavy_index, list(used)


def to_openmm(atoms, xyz=None, forcefield="amber14", solvent="obc", ph=7.0, histidine="auto", hydrogens=True):
    """One frame of an AtomGroup -> (openmm.app.Topology, positions Quantity in nm).

    ``xyz`` [A, 3] Å (default: current positions); ``forcefield``/``solvent`` name the templates used to add
    hydrogens (``hydrogens=False``: heavy atoms only, standard bonds and added OXT). The Topology has the input's
    box, chains and disulfides.
    """
    hs = heavy_structure(atoms, xyz, histidine=histidine)
    heavy = hs.positions(np.asarray(atoms.positions if xyz is None else xyz, dtype=np.float64))
    if not hydrogens:
        return hs.topology, unit.Quantity(heavy * 0.1, unit.nanometer)
    ff = load_forcefield(forcefield, solvent)
    top, pos, _, _ = add_hydrogens(hs, heavy, ff, ph=ph)
    return top, unit.Quantity(pos * 0.1, unit.nanometer)


class HydrogenPlacer:
    """Rebuild hydrogens of one hydrogenated topology on new heavy-atom positions, fast (numpy, no minimisation).

    Each H keeps the coordinates it had, in a reference frame, in the local frame of its parent P and two heavy
    atoms A, B near P (A bonded to P; B bonded to P or A). ``top`` openmm Topology with H; ``ref_xyz`` [T, 3] Å.
    """

    def __init__(self, top: app.Topology, ref_xyz: np.ndarray):
        atoms = list(top.atoms())
        is_h = np.array([a.element is not None and a.element.symbol == "H" for a in atoms])
        heavy_nb = {a.index: [] for a in atoms}
        parent = {}
        for a, b in top.bonds():
            if is_h[a.index] != is_h[b.index]:
                h, p = (a, b) if is_h[a.index] else (b, a)
                parent[h.index] = p.index
            elif not is_h[a.index]:
                heavy_nb[a.index].append(b.index)
                heavy_nb[b.index].append(a.index)
        self.h_index = np.array(sorted(parent), dtype=np.int64)
        p = np.array([parent[h] for h in self.h_index], dtype=np.int64)
        a_ix, b_ix = [], []
        for pi in p:
            nb = heavy_nb[pi]
            if len(nb) >= 2:
                a_ix.append(nb[0]), b_ix.append(nb[1])
            elif len(nb) == 1:
                second = [k for k in heavy_nb[nb[0]] if k != pi]
                a_ix.append(nb[0]), b_ix.append(second[0] if second else -1)
            else:
                a_ix.append(-1), b_ix.append(-1)
        self.p, self.a, self.b = p, np.array(a_ix, dtype=np.int64), np.array(b_ix, dtype=np.int64)
        self.framed = (self.a >= 0) & (self.b >= 0)
        ref_xyz = np.asarray(ref_xyz, dtype=np.float64)
        offset = ref_xyz[self.h_index] - ref_xyz[self.p]
        frames = self._frames(ref_xyz)
        self.local = np.einsum("hij,hj->hi", frames, offset)

    def _frames(self, xyz):
        """Orthonormal frames [K, 3, 3] (rows e1, e2, e3) at each H's parent; identity where not defined."""
        pp = xyz[self.p]
        e1 = xyz[np.where(self.a >= 0, self.a, self.p)] - pp
        v = xyz[np.where(self.b >= 0, self.b, self.p)] - pp
        e1 = e1 / np.maximum(np.linalg.norm(e1, axis=-1, keepdims=True), 1e-9)
        e2 = v - np.sum(v * e1, axis=-1, keepdims=True) * e1
        n2 = np.linalg.norm(e2, axis=-1, keepdims=True)
        ok = self.framed & (n2[:, 0] > 1e-6)
        e2 = e2 / np.maximum(n2, 1e-9)
        e3 = np.cross(e1, e2)
        frames = np.stack([e1, e2, e3], axis=1)
        frames[~ok] = np.eye(3)
        return frames

    def place(self, xyz: np.ndarray) -> np.ndarray:
        """Positions [T, 3] Å with valid heavy atoms -> copy with every hydrogen rebuilt."""
        out = np.array(xyz, dtype=np.float64, copy=True)
        frames = self._frames(out)
        out[self.h_index] = out[self.p] + np.einsum("hji,hj->hi", frames, self.local)
        return out
