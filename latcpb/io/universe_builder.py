"""All-atom MDAnalysis Universes built from a residue topology (``Universe.empty`` + ``add_TopologyAttr``), with an
in-memory trajectory that keeps the time, MD step and box of every frame."""
from __future__ import annotations

import warnings

import MDAnalysis as mda
import numpy as np
from MDAnalysis.coordinates.memory import MemoryReader

from latcpb.data.cg_topology import ResidueTopology
from latcpb.geometry import residue_constants as rc


class TimedMemoryReader(MemoryReader):
    """``MemoryReader`` whose frames carry their own time (ps) and MD step, not ``frame * dt``.

    times: [F] float ps or None (then ``frame * dt``); steps: [F] int or None. Defines no ``format`` of its own,
    so MDAnalysis' reader registry is left unchanged.
    """

    def __init__(self, coordinate_array, times=None, steps=None, **kwargs):
        self.times = None  # the base class reads frame 0 while initialising
        self.steps = None
        super().__init__(coordinate_array, **kwargs)
        self.times = None if times is None else np.asarray(times, dtype=np.float64).reshape(-1)
        self.steps = None if steps is None else np.asarray(steps, dtype=np.int64).reshape(-1)
        for name, values in (("times", self.times), ("steps", self.steps)):
            if values is not None and len(values) != self.n_frames:
                raise ValueError(f"{len(values)} {name} for {self.n_frames} frames")
        self._read_frame(0)

    def _read_next_timestep(self, ts=None):
        ts = super()._read_next_timestep(ts)
        if self.times is not None:
            ts.time = float(self.times[ts.frame])
        if self.steps is not None:
            ts.data["step"] = int(self.steps[ts.frame])
        return ts

    def copy(self):
        new = super().copy()
        new.times = None if self.times is None else self.times.copy()
        new.steps = None if self.steps is None else self.steps.copy()
        new._read_frame(self.ts.frame)
        return new


def slot_atom_index(atom_mask: np.ndarray) -> np.ndarray:
    """Flat indices into [N * 15] of the atoms that exist, in output atom order, [A]."""
    return np.flatnonzero(atom_mask.reshape(-1))


CHAIN_LETTERS = [chr(c) for c in range(ord("A"), ord("Z") + 1)] + [chr(c) for c in range(ord("a"), ord("z") + 1)] \
    + [str(d) for d in range(10)]


def output_chain_labels(topology: ResidueTopology) -> tuple[np.ndarray, np.ndarray]:
    """(chainID [N], segid [N]) per residue: every chain of the layout gets its own pair, and consecutive chains
    always differ in it.

    Input without chain IDs: the chains get A, B, C ... (62 letters, then again). Otherwise the first piece of an
    input chain keeps its chain ID and segment, and a piece after a break inside it gets a letter unused by the input's
    chain IDs and segments as chain ID and segment. A blank segment takes the chain ID.
    """
    chain_index = topology.layout.chain_index
    raw_chain = np.array([c.strip() for c in topology.chain_ids], dtype=object)
    raw_seg = np.array([s.strip() for s in topology.segids], dtype=object)
    blank = not any(raw_chain)
    spare = [c for c in CHAIN_LETTERS if c not in set(raw_chain) | set(raw_seg)] or CHAIN_LETTERS
    out_chain = np.empty(len(chain_index), dtype=object)
    out_seg = np.empty(len(chain_index), dtype=object)
    starts = np.flatnonzero(np.r_[True, chain_index[1:] != chain_index[:-1]])
    seen, previous, n_new = set(), None, 0
    for k, first in enumerate(starts):
        end = starts[k + 1] if k + 1 < len(starts) else len(chain_index)
        key = (raw_seg[first], raw_chain[first])
        if blank:
            chain = CHAIN_LETTERS[k % len(CHAIN_LETTERS)]
            seg = raw_seg[first] if raw_seg[first] and key not in seen else chain
        elif key in seen:  # a later piece of an input chain split at a break
            chain = seg = spare[n_new % len(spare)]
            n_new += 1
        else:
            chain, seg = raw_chain[first], raw_seg[first] or raw_chain[first]
        if (seg, chain) == previous:  # never the same pair twice in a row
            chain = next(c for c in CHAIN_LETTERS if c != previous[1])
        out_chain[first:end], out_seg[first:end] = chain, seg
        seen.add(key)
        previous = (seg, chain)
    return out_chain, out_seg


def allatom_universe(topology: ResidueTopology, positions: np.ndarray | None = None, times=None, dimensions=None,
                     dt: float | None = None, steps=None) -> mda.Universe:
    """Heavy-atom Universe of a residue topology: PDB atom names, the input's residue names (protonation and
    disulfide variants kept), resids, chain IDs and segments (one chainID + segid per chain of the layout), elements,
    and the SG-SG bonds of the disulfides the input declares (``u.bonds``).

    positions: [F, A, 3] Å (an in-memory trajectory) or None (one frame of zeros); times: [F] ps (default
    ``frame * dt``); dimensions: [F, 6] or [6] (Å, degrees) or None (no box); dt: ps between frames (default 1);
    steps: [F] MD steps or None.
    """
    atom_mask = topology.layout.atom_mask
    flat = slot_atom_index(atom_mask)
    residue_of_atom = flat // rc.ATOMS_PER_RESIDUE
    slot_of_atom = flat % rc.ATOMS_PER_RESIDUE
    names = np.array([rc.slot_names(topology.resnames[r])[s] for r, s in zip(residue_of_atom, slot_of_atom)],
                     dtype=object)
    elements = np.array([rc.element_of(n) for n in names], dtype=object)
    chain_ids, segids = output_chain_labels(topology)
    seg_names, first = [], {}
    for s in segids:  # segments in input order
        if s not in first:
            first[s] = len(seg_names)
            seg_names.append(s)
    residue_segindex = np.array([first[s] for s in segids], dtype=np.int64)
    u = mda.Universe.empty(len(flat), n_residues=topology.n_residues, n_segments=len(seg_names),
                           atom_resindex=residue_of_atom, residue_segindex=residue_segindex, trajectory=False)
    u.add_TopologyAttr("names", names)
    u.add_TopologyAttr("types", elements)
    u.add_TopologyAttr("elements", elements)
    u.add_TopologyAttr("record_types", np.full(len(flat), "ATOM", dtype=object))
    u.add_TopologyAttr("chainIDs", chain_ids[residue_of_atom])
    u.add_TopologyAttr("altLocs", np.full(len(flat), "", dtype=object))
    u.add_TopologyAttr("occupancies", np.ones(len(flat)))
    u.add_TopologyAttr("tempfactors", np.zeros(len(flat)))
    u.add_TopologyAttr("resnames", np.asarray(topology.output_resnames, dtype=object))
    u.add_TopologyAttr("resids", np.asarray(topology.resids))
    u.add_TopologyAttr("resnums", np.asarray(topology.resids))
    u.add_TopologyAttr("icodes", np.asarray(topology.icodes, dtype=object))
    u.add_TopologyAttr("segids", np.asarray(seg_names, dtype=object))
    u.add_TopologyAttr("bonds", disulfide_bonds(topology, flat))
    if positions is None:
        positions = np.zeros((1, len(flat), 3), dtype=np.float32)
    positions = np.asarray(positions, dtype=np.float32)
    if dimensions is not None:
        dimensions = np.asarray(dimensions, dtype=np.float32)
        if dimensions.ndim == 2 and not np.any(dimensions[:, :3] > 0):
            dimensions = None
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        u.trajectory = TimedMemoryReader(positions, order="fac", times=times, steps=steps, dimensions=dimensions,
                                         dt=1.0 if dt is None else float(dt))
    return u


def disulfide_bonds(topology: ResidueTopology, flat: np.ndarray) -> list[tuple[int, int]]:
    """Atom index pairs (SG, SG) of ``topology.disulfides`` in an all-atom Universe with atoms ``flat``."""
    pairs = getattr(topology, "disulfides", None)
    if pairs is None or len(pairs) == 0:
        return []
    sg_slot = rc.slot_names("CYS").index("SG")
    atom_of = {int(f): i for i, f in enumerate(flat)}
    return [(atom_of[int(i) * rc.ATOMS_PER_RESIDUE + sg_slot], atom_of[int(j) * rc.ATOMS_PER_RESIDUE + sg_slot])
            for i, j in pairs]
