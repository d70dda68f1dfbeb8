"""The residues of a system, read from a CG (one bead per residue) or all-atom MDAnalysis AtomGroup, and the one
chain rule of the project (``chain_starts``), used by the core and the OpenMM side alike.

Chain rule, for each pair of consecutive beads (residues i, i+1):

1. A change of segment or chain ID is always a break.
2. Where the topology has bonds (PSF, TPR, PDB CONECT ...) around the pair, bonds decide: residues i and i+1
   bonded to each other (any atom pair) are one chain; if they are not, but i is bonded to i-1 and i+1 to i+2, it
   is a break. Elsewhere (no bonds, or bonds that cover only part of the system, e.g. CONECT of a ligand):
3. a jump in residue numbering (resid + 1 expected; the same resid with another insertion code also continues)
   is a break, and
4. a bead spacing test adds a break where consecutive beads are more than ``MAX_BEAD_SPACING`` (6.5 Å, well
   above the 2.5-5.1 Å of soft CG bonds) apart (minimum image when there is a box) in *every* frame checked.
5. A numbering break (3) next to a residue that would otherwise be a chain of 1 residue is dropped when the
   spacing test passes; a residue still alone is an error.

Every chain of the layout ends with OXT (each becomes its own chain, chainID, segment and TER in the output).
"""
from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from latcpb.data.names import normalize_resname, output_resname
from latcpb.errors import LatcpbInputError
from latcpb.geometry.internal_coords import ResidueLayout
from latcpb.geometry.residue_constants import RESTYPE_INDEX

MAX_BEAD_SPACING = 6.5  # Å: consecutive beads further apart (in every frame checked) are a break
CHAIN_BREAK_DISTANCE = MAX_BEAD_SPACING  # older name
DISULFIDE_CA_DISTANCE = 6.8  # Å: CYX beads paired as mutual nearest CYX neighbours within this CA-CA distance
DISULFIDE_NAMES = frozenset({"CYX", "CYS2", "CSS"})  # residue names that mean "cysteine in a disulfide"


@dataclass(frozen=True)
class ResidueTopology:
    """Residue-level description of a system: names (normalised), numbering, chains and the geometry layout."""

    resnames: np.ndarray     # [N] str, standard three-letter names
    resids: np.ndarray       # [N] int, as in the input
    icodes: np.ndarray       # [N] str
    chain_ids: np.ndarray    # [N] str
    segids: np.ndarray       # [N] str
    layout: ResidueLayout
    input_resnames: np.ndarray | None = None  # [N] str, names written to output (variants kept); None: resnames
    disulfides: np.ndarray | None = None      # [D, 2] int, residue index pairs joined by an SG-SG bond

    @property
    def output_resnames(self) -> np.ndarray:
        """[N] str: residue names of the all-atom output (the input's protonation/disulfide names kept)."""
        return self.resnames if self.input_resnames is None else self.input_resnames

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


def chain_starts(segids, chain_ids, resids, icodes=None, linked=None, xyz=None, boxes=None):
    """The chain rule (see the module docstring): ``(new_chain [N] bool, reason [N] str)``.

    segids, chain_ids, resids, icodes: [N] per bead (residue) in chain order; linked: [N-1] int per consecutive
    pair, 1 bonded in the topology, 0 the topology's bonds say "not bonded", -1 no bond information (None: all -1);
    xyz: [F, N, 3] or [N, 3] Å of the frames checked; boxes: [F, 6] / [6] or None. reason[i] says why residue i
    starts a chain ("" where it continues one; "first" for residue 0).
    """
    from latcpb.io.periodic import minimum_image_spacing

    n = len(resids)
    segids = np.asarray(segids).astype(str)
    chain_ids = np.asarray(chain_ids).astype(str)
    resids = np.asarray(resids, dtype=np.int64)
    icodes = np.full(n, "", dtype=object).astype(str) if icodes is None else np.asarray(icodes).astype(str)
    linked = np.full(max(n - 1, 0), -1, dtype=np.int64) if linked is None else np.asarray(linked, dtype=np.int64)
    reason = np.full(n, "", dtype=object)
    if n == 0:
        return np.zeros(0, dtype=bool), reason
    reason[0] = "first"
    if n == 1:
        return np.ones(1, dtype=bool), reason
    id_change = (segids[1:] != segids[:-1]) | (chain_ids[1:] != chain_ids[:-1])
    step = resids[1:] - resids[:-1]
    same_number = (step == 0) & (np.char.strip(icodes[1:]) != np.char.strip(icodes[:-1]))
    numbering = ~((step == 1) | same_number | ((resids[:-1] >= 99999) & (resids[1:] <= 1)))  # GRO wraps at 1e5
    too_far = np.zeros(n - 1, dtype=bool)
    spaced = np.zeros(n - 1, dtype=bool)  # spacing fine in every frame checked
    if xyz is not None:
        frames = np.asarray(xyz, dtype=np.float64).reshape(-1, n, 3)
        box_list = [None] * len(frames) if boxes is None else list(np.asarray(boxes, dtype=np.float64).reshape(-1, 6))
        if len(box_list) == 1 and len(frames) > 1:
            box_list = box_list * len(frames)
        spacing = np.stack([minimum_image_spacing(f, b) for f, b in zip(frames, box_list)])  # [F, N-1]
        too_far = (spacing > MAX_BEAD_SPACING).all(axis=0)
        spaced = (spacing <= MAX_BEAD_SPACING).all(axis=0)
    unknown = linked < 0
    brk = id_change | (linked == 0) | (unknown & (numbering | too_far))
    # a numbering break beside a lone residue is dropped where the spacing test passes
    soft = unknown & numbering & ~too_far & spaced & ~id_change
    starts = np.r_[True, brk]
    lengths = np.diff(np.r_[np.flatnonzero(starts), n])
    alone = np.repeat(lengths == 1, lengths)
    for k in np.flatnonzero(soft):  # pair k joins residues k and k+1
        if alone[k] or alone[k + 1]:
            brk[k] = False
    why = np.where(id_change, "chain/segment ID change", np.where(linked == 0, "no bond in the topology", np.where(
        numbering, "residue numbering jump", f"bead spacing > {MAX_BEAD_SPACING} Å in every frame checked")))
    reason[1:][brk] = why[brk]
    return np.r_[True, brk], reason


def topology_links(beads) -> np.ndarray:
    """[N-1] int per consecutive pair of beads: 1 their residues are bonded in the topology, 0 not bonded although
    both are bonded to their other neighbour, -1 no bond information there (see ``chain_starts``)."""
    n = len(beads)
    links = np.full(max(n - 1, 0), -1, dtype=np.int64)
    pairs = residue_bond_pairs(beads)
    if n < 2 or not pairs:
        return links
    res = beads.resindices
    bonded = np.array([(min(a, b), max(a, b)) in pairs for a, b in zip(res[:-1], res[1:])], dtype=bool)
    links[bonded] = 1
    prev_ok = np.r_[False, bonded[:-1]]  # residue i bonded to i-1
    next_ok = np.r_[bonded[1:], False]   # residue i+1 bonded to i+2
    links[~bonded & prev_ok & next_ok] = 0
    return links


def residue_bond_pairs(beads) -> set:
    """{(resindex a, resindex b), a < b} of residues joined by a bond of the topology (empty without bonds)."""
    try:
        bond_index = beads.universe.bonds.indices
    except Exception:  # MDAnalysis raises NoDataError when the topology has no bonds
        return set()
    if len(bond_index) == 0:
        return set()
    resindex = beads.universe.atoms.resindices
    a, b = resindex[bond_index[:, 0]], resindex[bond_index[:, 1]]
    keep = a != b
    lo, hi = np.minimum(a[keep], b[keep]), np.maximum(a[keep], b[keep])
    return set(zip(lo.tolist(), hi.tolist()))


def declared_disulfides(beads, raw_names, resnames, chain_index, xyz, box=None) -> np.ndarray:
    """[D, 2] bead index pairs of the disulfides the input declares: two cysteines bonded in the topology that are
    not sequence neighbours of one chain, and disulfide-named residues (CYX ...) paired as mutual nearest such beads
    within ``DISULFIDE_CA_DISTANCE`` (frame ``xyz`` [N, 3], minimum image with a box)."""
    from MDAnalysis.lib.distances import distance_array

    cys = np.flatnonzero(resnames == "CYS")
    if len(cys) < 2:
        return np.zeros((0, 2), dtype=np.int64)
    pairs = residue_bond_pairs(beads)
    res = beads.resindices
    found, used = [], set()
    if pairs:
        for x, i in enumerate(cys):
            for j in cys[x + 1:]:
                neighbours = j == i + 1 and chain_index[i] == chain_index[j]
                if not neighbours and (min(res[i], res[j]), max(res[i], res[j])) in pairs and i not in used \
                        and j not in used:
                    found.append((i, j))
                    used.update((i, j))
    cyx = np.array([i for i in cys if raw_names[i].strip().upper() in DISULFIDE_NAMES and i not in used])
    if len(cyx) >= 2:
        d = distance_array(xyz[cyx].astype(np.float64), xyz[cyx].astype(np.float64),
                           box=None if box is None else np.asarray(box, dtype=np.float64))
        np.fill_diagonal(d, np.inf)
        nearest = d.argmin(axis=1)
        for a, b in enumerate(nearest):
            if a < b and nearest[b] == a and d[a, b] <= DISULFIDE_CA_DISTANCE:
                found.append((int(cyx[a]), int(cyx[b])))
    return np.array(sorted(found), dtype=np.int64).reshape(-1, 2)


def residue_topology(beads, ca_xyz, source="input", break_distance=None, boxes=None):
    """Residue topology from one bead per residue.

    beads: MDAnalysis AtomGroup (one atom per residue, in chain order); ca_xyz [N, 3] or [F, N, 3] Å: the frames
    the bead spacing test of the chain rule checks (``chain_starts``); boxes [F, 6] / [6] or None: their periodic
    boxes. Raises ``LatcpbInputError`` naming ``source`` and the residues at fault.
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
    raw_names = np.asarray(beads.resnames).astype(str)
    resnames = np.array([normalize_resname(r) or "" for r in raw_names], dtype=object)
    unknown = [f"{raw} {rid}" for raw, norm, rid in zip(raw_names, resnames, beads.resids) if not norm]
    if unknown:
        shown = ", ".join(unknown[:10]) + (f" and {len(unknown) - 10} more" if len(unknown) > 10 else "")
        raise LatcpbInputError(f"{source}: unknown residue names (not standard amino acids): {shown}")
    chain_ids = topology_attr(beads, "chainIDs")
    segids = topology_attr(beads, "segids")
    icodes = topology_attr(beads, "icodes")
    xyz = np.asarray(ca_xyz, dtype=np.float64).reshape(-1, len(beads), 3)
    if not np.isfinite(xyz).all():
        raise LatcpbInputError(f"{source}: non-finite (NaN or inf) coordinates in the first frame")
    new_chain, reason = chain_starts(segids, chain_ids, beads.resids, icodes, topology_links(beads), xyz, boxes)
    chain_index = np.cumsum(new_chain) - 1
    lengths = np.bincount(chain_index)
    if lengths.min() < 2:
        i = int(np.nonzero(lengths[chain_index] < 2)[0][0])
        sides = [r for r in (reason[i], reason[i + 1] if i + 1 < len(beads) else "last") if r not in ("first",
                                                                                                       "last")]
        raise LatcpbInputError(
            f"{source}: residue {describe_residue(raw_names[i], beads.resids[i], chain_ids[i])} forms a chain of"
            f" 1 residue (apart from its neighbours: {'; '.join(sides) or 'alone'}); at least 2 are needed")
    has_oxt = np.r_[new_chain[1:], True]
    restype = np.array([RESTYPE_INDEX[r] for r in resnames])
    layout = ResidueLayout.from_chains(restype, chain_index, has_oxt)
    boxes_arr = None if boxes is None else np.asarray(boxes, dtype=np.float64).reshape(-1, 6)
    first_box = None if boxes_arr is None or not np.all(boxes_arr[0, :3] > 0) else boxes_arr[0]
    disulfides = declared_disulfides(beads, raw_names, resnames, chain_index, xyz[0], first_box)
    kept = np.array([output_resname(r) for r in raw_names], dtype=object).astype(str)
    return ResidueTopology(resnames.astype(str), np.asarray(beads.resids), icodes, chain_ids, segids, layout,
                           input_resnames=kept, disulfides=disulfides)
