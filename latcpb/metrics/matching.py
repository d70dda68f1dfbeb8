"""Reference and generated structures matched atom by atom in the 15-slot residue layout.

Residues are matched by (chain ID, resid, insertion code, normalised residue name) and atoms inside a residue by
their normalised name (= slot). Shapes: N matched residues, S = 15 slots, M matched atoms.
"""
from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from latcpb.data.featurize import map_allatom, slot_assignment, standard_residue_cas
from latcpb.data.names import normalize_resname
from latcpb.errors import LatcpbInputError
from latcpb.geometry import residue_constants as rc
from latcpb.data.cg_topology import topology_attr

S = rc.ATOMS_PER_RESIDUE
BACKBONE_SLOTS = np.array([0, 1, 2, 3])          # N, CA, C, O
SIDE_CHAIN_SLOTS = np.arange(5, rc.OXT_SLOT)     # beyond CB (OXT excluded)


@dataclass(frozen=True)
class MatchedSystem:
    """Atom correspondence between a reference and a generated AtomGroup.

    ``mask`` [N, S] bool: slot present in both; ``ref_present`` [N, S]: slot present in the reference;
    ``ref_source``/``gen_source`` [M] indices into the AtomGroups of the matched atoms, in the order of
    ``np.nonzero(mask.ravel())``; ``ref_rows`` [N] residue rows in the reference (consecutive rows of one
    chain are bonded neighbours); ``terminal`` [N] bool: first/last residue of a chain (the reference's chains,
    split at CA-CA > 4.2 Å); ``chain_index`` [N] int; ``n_ref_atoms`` heavy atoms of all reference residues.
    """

    resnames: np.ndarray
    resids: np.ndarray
    chain_ids: np.ndarray
    restype: np.ndarray
    ref_rows: np.ndarray
    chain_index: np.ndarray
    terminal: np.ndarray
    mask: np.ndarray
    ref_present: np.ndarray
    gen_present: np.ndarray
    ref_source: np.ndarray
    gen_source: np.ndarray
    n_ref_atoms: int
    n_ref_residues: int

    @property
    def n_residues(self) -> int:
        return len(self.resnames)

    @property
    def coverage(self) -> float:
        """Share of reference heavy atoms that the generated structure provides (0..1)."""
        return float(self.mask.sum()) / max(self.n_ref_atoms, 1)

    @property
    def elements(self) -> np.ndarray:
        """[N, S] element letter per slot ('' where empty)."""
        return rc.RESTYPE_ELEMENTS[self.restype]

    @property
    def previous(self) -> np.ndarray:
        """[N] index of the bonded preceding residue (same chain, previous reference row), -1 where none."""
        prev = np.full(self.n_residues, -1, dtype=np.int64)
        ok = (self.ref_rows[1:] == self.ref_rows[:-1] + 1) & (self.chain_index[1:] == self.chain_index[:-1])
        prev[1:][ok] = np.arange(self.n_residues - 1)[ok]
        return prev

    def slots(self, positions: np.ndarray, which: str) -> np.ndarray:
        """AtomGroup positions [A, 3] (or [F, A, 3]) Å -> matched slot coordinates [(F,) N, S, 3] (0 where absent)."""
        source = self.ref_source if which == "ref" else self.gen_source
        positions = np.asarray(positions, dtype=np.float64)
        lead = positions.shape[:-2]
        out = np.zeros(lead + (self.n_residues * S, 3))
        out[..., np.flatnonzero(self.mask), :] = positions[..., source, :]
        return out.reshape(lead + (self.n_residues, S, 3))


@dataclass(frozen=True)
class _SlotMap:
    """Residues (keys) and heavy-atom slots of an AtomGroup, without any check of the geometry."""

    chain_ids: np.ndarray
    resids: np.ndarray
    icodes: np.ndarray
    resnames: np.ndarray
    source_index: np.ndarray
    slot_index: np.ndarray
    present: np.ndarray

    @property
    def n_residues(self) -> int:
        return len(self.resnames)


def _slot_map(atoms) -> _SlotMap:
    """Slot mapping of a generated AtomGroup. Unlike ``map_allatom`` it does not split chains at CA-CA gaps:
    a generated structure is scored however distorted it is."""
    ca = standard_residue_cas(atoms)
    resnames = np.array([normalize_resname(r) for r in ca.resnames], dtype=object).astype(str)
    src, dst, present = slot_assignment(atoms, ca, resnames)
    return _SlotMap(topology_attr(ca, "chainIDs"), np.asarray(ca.resids), topology_attr(ca, "icodes"), resnames,
                    src, dst, present)


def _residue_keys(topology, with_chain=True):
    chains = topology.chain_ids if with_chain else np.full(topology.n_residues, "")
    return [(str(c), int(r), str(i).strip(), str(n))
            for c, r, i, n in zip(chains, topology.resids, topology.icodes, topology.resnames)]


def match_systems(ref_atoms, gen_atoms, ref_source="reference", gen_source="generated") -> MatchedSystem:
    """Match two all-atom AtomGroups (hydrogens ignored). Raises ``LatcpbInputError`` if no residue matches.

    When no residue matches with chain IDs and each side has one chain ID, chain IDs are ignored (a blank or
    renamed single chain).
    """
    ref = map_allatom(ref_atoms, source=ref_source)
    gen = _slot_map(gen_atoms)
    ref_keys, gen_keys = _residue_keys(ref.topology), _residue_keys(gen)
    gen_row = {k: i for i, k in enumerate(gen_keys)}
    if not any(k in gen_row for k in ref_keys) and len(set(ref.topology.chain_ids)) == 1 \
            and len(set(gen.chain_ids)) == 1:
        ref_keys, gen_keys = _residue_keys(ref.topology, False), _residue_keys(gen, False)
        gen_row = {k: i for i, k in enumerate(gen_keys)}
    pairs = [(i, gen_row[k]) for i, k in enumerate(ref_keys) if k in gen_row]
    if 0 < len(pairs) < len(ref_keys) and len(set(ref.topology.chain_ids)) == 1:
        # a reference chain split at a gap comes back as several chains (each piece has its own chain ID):
        # the rest is matched without chain IDs where that is unambiguous
        loose = {}
        for g, k in enumerate(_residue_keys(gen, False)):
            loose.setdefault(k, []).append(g)
        have, taken = {r for r, _ in pairs}, {g for _, g in pairs}
        pairs = sorted(pairs + [(i, loose[k][0]) for i, k in enumerate(_residue_keys(ref.topology, False))
                                if i not in have and len(loose.get(k, ())) == 1 and loose[k][0] not in taken])
    if not pairs:
        raise LatcpbInputError(
            f"{gen_source}: no residue matches {ref_source} by (chain, resid, residue name)"
            f" (first reference residue {ref_keys[0] if ref_keys else None},"
            f" first generated {gen_keys[0] if gen_keys else None})")
    ri, gi = (np.asarray(x, dtype=np.int64) for x in zip(*pairs))
    ref_present = ref.present[ri]
    gen_present = gen.present[gi]
    mask = ref_present & gen_present
    # slot -> source atom lookup tables, flat over [residues * S]
    ref_lookup = np.full(ref.topology.n_residues * S, -1, dtype=np.int64)
    ref_lookup[ref.slot_index] = ref.source_index
    gen_lookup = np.full(gen.n_residues * S, -1, dtype=np.int64)
    gen_lookup[gen.slot_index] = gen.source_index
    flat_ref = (ri[:, None] * S + np.arange(S)).ravel()[mask.ravel()]
    flat_gen = (gi[:, None] * S + np.arange(S)).ravel()[mask.ravel()]
    layout = ref.topology.layout
    chain_index = layout.chain_index
    first = np.r_[True, chain_index[1:] != chain_index[:-1]]
    last = np.r_[chain_index[1:] != chain_index[:-1], True]
    return MatchedSystem(
        resnames=ref.topology.resnames[ri], resids=np.asarray(ref.topology.resids)[ri],
        chain_ids=ref.topology.chain_ids[ri], restype=layout.restype[ri], ref_rows=ri, chain_index=chain_index[ri],
        terminal=(first | last)[ri], mask=mask, ref_present=ref_present, gen_present=gen_present,
        ref_source=ref_lookup[flat_ref], gen_source=gen_lookup[flat_gen],
        n_ref_atoms=int(ref.present.sum()), n_ref_residues=ref.topology.n_residues)
