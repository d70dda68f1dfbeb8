"""All-atom structures in the 15-slot layout: which input atom fills which slot of which residue."""
from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from latcpb.data.cg_topology import ResidueTopology, residue_topology
from latcpb.data.names import is_hydrogen, normalize_atomname, normalize_resname
from latcpb.data.symmetry import canonical_symmetric
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

    def slots(self, positions: np.ndarray, canonical: bool = True) -> np.ndarray:
        """Positions of the AtomGroup [A, 3] Å -> slot coordinates [N, 15, 3] Å (zeros where absent); ``canonical``:
        symmetric side-chain atoms in their canonical naming (``canonical_symmetric``), else as the input names them."""
        out = np.zeros((self.topology.n_residues * rc.ATOMS_PER_RESIDUE, 3), dtype=positions.dtype)
        out[self.slot_index] = positions[self.source_index]
        out = out.reshape(self.topology.n_residues, rc.ATOMS_PER_RESIDUE, 3)
        return canonical_symmetric(out, self.topology.layout.restype, self.present) if canonical else out


def standard_residue_cas(atoms):
    """CA atoms of the standard amino-acid residues of an AtomGroup (capping groups, ligands, water skipped)."""
    if len(atoms) == 0:
        return atoms
    resnames = np.asarray(atoms.resnames)
    standard = {name: normalize_resname(name) is not None for name in np.unique(resnames)}
    keep = (np.asarray(atoms.names) == "CA") & np.array([standard[r] for r in resnames], dtype=bool)
    ca = atoms[keep]
    # one CA per residue (the first altloc)
    _, first = np.unique(ca.resindices, return_index=True)
    return ca[np.sort(first)]


def slot_assignment(atoms, ca, resnames):
    """Which heavy atom of ``atoms`` fills which slot of the residues of ``ca`` (one CA per residue).

    resnames [N]: normalised residue names of those residues. Returns (source_index [M], slot_index [M] flat
    into [N * 15], present [N, 15]); hydrogens, unknown names and repeated atoms (altlocs) are skipped.
    """
    slot_of = {r: {n: k for k, n in enumerate(rc.slot_names(r)) if n} for r in rc.RESTYPES}
    try:
        elements = atoms.elements
    except Exception:  # no element information (MDAnalysis NoDataError): decide by name
        elements = [None] * len(atoms)
    resindex_to_row = {ri: i for i, ri in enumerate(ca.resindices)}
    src, dst = [], []
    seen = set()
    for i, (name, resindex, element) in enumerate(zip(atoms.names, atoms.resindices, elements)):
        row = resindex_to_row.get(resindex)
        if row is None or is_hydrogen(name, element):
            continue
        slot = slot_of[resnames[row]].get(normalize_atomname(resnames[row], name))
        if slot is None:
            continue
        flat = row * rc.ATOMS_PER_RESIDUE + slot
        if flat in seen:
            continue
        seen.add(flat)
        src.append(i)
        dst.append(flat)
    present = np.zeros(len(ca) * rc.ATOMS_PER_RESIDUE, dtype=bool)
    present[dst] = True
    return (np.asarray(src, dtype=np.int64), np.asarray(dst, dtype=np.int64),
            present.reshape(len(ca), rc.ATOMS_PER_RESIDUE))


def map_allatom(atoms, source="input") -> AllAtomMapping:
    """Build the slot mapping of an all-atom AtomGroup (heavy atoms; hydrogens ignored)."""
    ca = standard_residue_cas(atoms)
    topology = residue_topology(ca, ca.positions, source=source)
    src, dst, present = slot_assignment(atoms, ca, topology.resnames)
    return AllAtomMapping(topology, ca, src, dst, present)
