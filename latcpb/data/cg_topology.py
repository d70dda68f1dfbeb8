"""The residues of a system, read from a CG (one bead per residue) or all-atom MDAnalysis AtomGroup.

Chains are split where the chain ID (or segment) changes and where consecutive CA beads are further apart than
``break_distance`` (4.2 Å). OXT is placed on the last residue of each chain ID, not at breaks inside a chain.
"""
from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from latcpb.data.names import normalize_resname
from latcpb.errors import LatcpbInputError
from latcpb.geometry.internal_coords import ResidueLayout
from latcpb.geometry.residue_constants import RESTYPE_INDEX

CHAIN_BREAK_DISTANCE = 4.2  # Å between consecutive CA beads


@dataclass(frozen=True)
class ResidueTopology:
    """Residue-level description of a system: names (normalised), numbering, chains and the geometry layout."""

    resnames: np.ndarray     # [N] str, standard three-letter names
    resids: np.ndarray       # [N] int, as in the input
    icodes: np.ndarray       # [N] str
    chain_ids: np.ndarray    # [N] str
    segids: np.ndarray       # [N] str
    layout: ResidueLayout

    @property
    def n_residues(self) -> int:
        return len(self.resnames)

    @property
    def sequence(self) -> str:
        from latcpb.geometry.residue_constants import ONE_LETTER
        return "".join(ONE_LETTER[r] for r in self.resnames)


def topology_attr(group, name, default=""):
    """A per-atom string attribute of an AtomGroup ([n] str), or ``default`` everywhere where the topology lacks it."""
    try:
        return np.asarray(getattr(group, name)).astype(str)
    except Exception:  # MDAnalysis raises NoDataError (an AttributeError/ValueError subclass)
        return np.full(len(group), default, dtype=object).astype(str)


def describe_residue(resname, resid, chain_id=""):
    """'ALA 12 (chain A)' style label for messages."""
    return f"{resname} {resid}" + (f" (chain {chain_id})" if chain_id.strip() else "")


def residue_topology(beads, ca_xyz, source="input", break_distance=CHAIN_BREAK_DISTANCE):
    """Residue topology from one bead per residue.

    beads: MDAnalysis AtomGroup (one atom per residue, in chain order); ca_xyz [N, 3] Å of one frame used to find
    chain breaks. Raises ``LatcpbInputError`` naming ``source`` and the residues at fault.
    """
    if len(beads) == 0:
        raise LatcpbInputError(f"{source}: the selection matched no atoms")
    residues = beads.residues
    if len(residues) != len(beads):
        counts = np.bincount(beads.resindices - beads.resindices.min())
        bad = residues[np.nonzero(counts[residues.resindices - beads.resindices.min()] > 1)[0][0]]
        n = int(counts[bad.resindex - beads.resindices.min()])
        raise LatcpbInputError(
            f"{source}: the selection matched {n} atoms in residue {describe_residue(bad.resname, bad.resid)};"
            " one bead per residue is expected (use --select)")
    raw_names = np.asarray(beads.resnames)
    resnames = np.array([normalize_resname(r) or "" for r in raw_names], dtype=object)
    unknown = [f"{raw} {rid}" for raw, norm, rid in zip(raw_names, resnames, beads.resids) if not norm]
    if unknown:
        shown = ", ".join(unknown[:10]) + (f" and {len(unknown) - 10} more" if len(unknown) > 10 else "")
        raise LatcpbInputError(f"{source}: unknown residue names (not standard amino acids): {shown}")
    chain_ids = topology_attr(beads, "chainIDs")
    segids = topology_attr(beads, "segids")
    if not np.isfinite(ca_xyz).all():
        raise LatcpbInputError(f"{source}: non-finite (NaN or inf) coordinates in the first frame")
    # molecule = chain ID (or segment where chain IDs are absent); chains split further at CA-CA breaks
    molecule_key = np.char.add(np.char.add(segids.astype(str), "|"), chain_ids.astype(str))
    new_molecule = np.ones(len(beads), dtype=bool)
    new_molecule[1:] = molecule_key[1:] != molecule_key[:-1]
    gap = np.zeros(len(beads), dtype=bool)
    gap[1:] = np.linalg.norm(ca_xyz[1:] - ca_xyz[:-1], axis=-1) > break_distance
    chain_index = np.cumsum(new_molecule | gap) - 1
    has_oxt = np.zeros(len(beads), dtype=bool)
    has_oxt[:-1] = new_molecule[1:]
    has_oxt[-1] = True
    lengths = np.bincount(chain_index)
    if lengths.min() < 2:
        i = int(np.nonzero(lengths[chain_index] < 2)[0][0])
        raise LatcpbInputError(
            f"{source}: residue {describe_residue(raw_names[i], beads.resids[i], chain_ids[i])} forms a chain of"
            f" 1 residue (chains split at chain IDs and at CA-CA > {break_distance} Å); at least 2 are needed")
    restype = np.array([RESTYPE_INDEX[r] for r in resnames])
    layout = ResidueLayout.from_chains(restype, chain_index, has_oxt)
    icodes = topology_attr(beads, "icodes")
    return ResidueTopology(resnames.astype(str), np.asarray(beads.resids), icodes, chain_ids, segids, layout)
