"""All-atom structures in the 15-slot layout: which input atom fills which slot of which residue."""
from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from latcpb.data.cg_topology import ResidueTopology, residue_topology
from latcpb.data.names import is_hydrogen, normalize_atomname, normalize_resname
from latcpb.geometry import residue_constants as rc


@dataclass(frozen=True)
class AllAtomMapping:
    """Map from the heavy atoms of an all-atom AtomGroup to the slots of its residues.

    ``source_index`` [M] indices into the AtomGroup; ``slot_index`` [M] flat indices into [N * 15];
    ``present`` [N, 15] bool: slot filled by the input.
    """

    topology: ResidueTopology
    ca_atoms: object  # MDAnalysis AtomGroup, one CA per residue
    source_index: np.ndarray
    slot_index: np.ndarray
    present: np.ndarray

    def slots(self, positions: np.ndarray) -> np.ndarray:
        """Positions of the AtomGroup [A, 3] Å -> slot coordinates [N, 15, 3] Å (zeros where absent)."""
        out = np.zeros((self.topology.n_residues * rc.ATOMS_PER_RESIDUE, 3), dtype=positions.dtype)
        out[self.slot_index] = positions[self.source_index]
        return out.reshape(self.topology.n_residues, rc.ATOMS_PER_RESIDUE, 3)


def standard_residue_cas(atoms):
    """CA atoms of the standard amino-acid residues of an AtomGroup (capping groups, ligands, water skipped)."""
    keep = [i for i, a in enumerate(atoms) if a.name == "CA" and normalize_resname(a.resname)]
    ca = atoms[keep]
    # one CA per residue (the first altloc)
    _, first = np.unique(ca.resindices, return_index=True)
    return ca[np.sort(first)]


def map_allatom(atoms, source="input") -> AllAtomMapping:
    """Build the slot mapping of an all-atom AtomGroup (heavy atoms; hydrogens ignored)."""
    ca = standard_residue_cas(atoms)
    topology = residue_topology(ca, ca.positions, source=source)
    slot_of = {r: {n: k for k, n in enumerate(rc.slot_names(r)) if n} for r in rc.RESTYPES}
    try:
        elements = atoms.elements
    except Exception:  # no element information: decide by name
        elements = [None] * len(atoms)
    resindex_to_row = {ri: i for i, ri in enumerate(ca.resindices)}
    src, dst = [], []
    seen = set()
    for i, (atom, element) in enumerate(zip(atoms, elements)):
        row = resindex_to_row.get(atom.resindex)
        if row is None or is_hydrogen(atom.name, element):
            continue
        resname = topology.resnames[row]
        slot = slot_of[resname].get(normalize_atomname(resname, atom.name))
        if slot is None:
            continue
        flat = row * rc.ATOMS_PER_RESIDUE + slot
        if flat in seen:
            continue
        seen.add(flat)
        src.append(i)
        dst.append(flat)
    present = np.zeros(topology.n_residues * rc.ATOMS_PER_RESIDUE, dtype=bool)
    present[dst] = True
    return AllAtomMapping(topology, ca, np.asarray(src, dtype=np.int64), np.asarray(dst, dtype=np.int64),
                          present.reshape(topology.n_residues, rc.ATOMS_PER_RESIDUE))
