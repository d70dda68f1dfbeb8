"""All-atom MDAnalysis Universes built from a residue topology (``Universe.empty`` + ``add_TopologyAttr``)."""
from __future__ import annotations

import warnings

import MDAnalysis as mda
import numpy as np
from MDAnalysis.coordinates.memory import MemoryReader

from latcpb.data.cg_topology import ResidueTopology
from latcpb.geometry import residue_constants as rc


def slot_atom_index(atom_mask: np.ndarray) -> np.ndarray:
    """Flat indices into [N * 15] of the atoms that exist, in output atom order, [A]."""
    return np.flatnonzero(atom_mask.reshape(-1))


def allatom_universe(topology: ResidueTopology, positions: np.ndarray | None = None) -> mda.Universe:
    """Heavy-atom Universe of a residue topology, PDB-standard names, input resids, chain IDs and segments.

    positions: [F, A, 3] Å (an in-memory trajectory) or None (one frame of zeros).
    """
    atom_mask = topology.layout.atom_mask
    flat = slot_atom_index(atom_mask)
    residue_of_atom = flat // rc.ATOMS_PER_RESIDUE
    slot_of_atom = flat % rc.ATOMS_PER_RESIDUE
    names = np.array([rc.slot_names(topology.resnames[r])[s] for r, s in zip(residue_of_atom, slot_of_atom)],
                     dtype=object)
    elements = np.array([rc.element_of(n) for n in names], dtype=object)
    chain_ids = np.array([c if c.strip() else "" for c in topology.chain_ids], dtype=object)
    if not any(c for c in chain_ids):
        chain_ids[:] = "A"
    segids = np.array([s.strip() or c for s, c in zip(topology.segids, chain_ids)], dtype=object)
    seg_names, residue_segindex = np.unique(segids, return_inverse=True)
    order = np.argsort([np.flatnonzero(segids == s)[0] for s in seg_names])  # segments in input order
    rank = np.empty_like(order)
    rank[order] = np.arange(len(order))
    residue_segindex = rank[residue_segindex]
    seg_names = seg_names[order]
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
    u.add_TopologyAttr("resnames", np.asarray(topology.resnames, dtype=object))
    u.add_TopologyAttr("resids", np.asarray(topology.resids))
    u.add_TopologyAttr("resnums", np.asarray(topology.resids))
    u.add_TopologyAttr("icodes", np.asarray(topology.icodes, dtype=object))
    u.add_TopologyAttr("segids", seg_names)
    if positions is None:
        positions = np.zeros((1, len(flat), 3), dtype=np.float32)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        u.trajectory = MemoryReader(np.asarray(positions, dtype=np.float32), order="fac")
    return u
