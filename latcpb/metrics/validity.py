"""Chemical validity of one structure in the 15-slot layout, chain ends included (DESIGN.md "Metrics", validity).

Every figure counts every residue, the first and last of each chain too:

- bond-angle outliers: |angle - Engh & Huber mean| > 4 sigma (MolProbity's rule), every heavy-atom angle of the
  residue templates, the peptide-bond angles (CA-C-N, O-C-N, C-N-CA, PRO C-N-CD), the C-terminal carboxylate and
  disulfides (table: ``data/engh_huber_angles.json``, its source cited there);
- severe overlaps: heavy-atom pairs more than three bonds apart (bond graph from the residue templates, peptide
  bonds and disulfides, never from distances) whose van der Waals sum exceeds their distance by >= 0.4 Å;
  donor-acceptor pairs (a possible hydrogen bond) count only when closer than 2.5 Å;
- C-beta deviation: distance (Å) of CB from its ideal position given N, CA, C (> 0.25 Å: outlier, MolProbity);
- planarity: RMS distance (Å) of a group's atoms from their least-squares plane; peptides also by omega;
- chirality (D residues) and non-proline cis peptides (``latcpb.metrics.structure`` / ``torsions``).

Shapes: xyz [N, S, 3] Å slot coordinates, present [N, S] bool, restype [N], previous [N] index of the bonded
preceding residue (-1 at chain starts). Internally atoms are the flat slots ``r * S + s``.
"""
from __future__ import annotations

import json
from dataclasses import dataclass
from functools import lru_cache
from pathlib import Path

import numpy as np
from scipy import sparse
from scipy.spatial import cKDTree

from latcpb.geometry import residue_constants as rc

S = rc.ATOMS_PER_RESIDUE
DATA_DIR = Path(__file__).resolve().parent / "data"
ANGLE_OUTLIER_SIGMA = 4.0           # MolProbity: > 4 sigma from Engh & Huber
ANGLE_REFERENCE_LIMIT_DEG = 15.0    # "far from the reference": an angle more than 15° from the reference's
SEVERE_OVERLAP = 0.4                # Å of the van der Waals sum
HBOND_OVERLAP_DISTANCE = 2.5        # Å: donor-acceptor pairs count as overlaps only when closer than this
CBETA_LIMIT = 0.25                  # Å, MolProbity's C-beta deviation outlier
DISULFIDE_DISTANCE = 2.5            # Å: CYS SG-SG pairs closer than this are disulfide-bonded
OMEGA_TWIST_LIMIT_DEG = 30.0        # peptide non-planar when omega is more than 30° from both 0° and 180°

# Heavy-atom van der Waals radii (Å) of MolProbity's probe: Word, J. M. et al. (1999) J. Mol. Biol. 285,
# 1735-1747 (Table 1, heavy atoms): C 1.70, sp2 carbon of C=O / carboxylate / amide / guanidinium 1.65,
# N 1.55, O 1.40, S 1.80.
VDW_RADII = {"C": 1.70, "N": 1.55, "O": 1.40, "S": 1.80}
SP2_CARBON_RADIUS = 1.65
SP2_CARBONS = {"*": ("C",), "ASP": ("CG",), "ASN": ("CG",), "GLU": ("CD",), "GLN": ("CD",), "ARG": ("CZ",)}

# Hydrogen-bond donors and acceptors by atom name (backbone N of proline is no donor).
DONORS = {"*": ("N",), "ARG": ("NE", "NH1", "NH2"), "ASN": ("ND2",), "GLN": ("NE2",), "HIS": ("ND1", "NE2"),
          "LYS": ("NZ",), "SER": ("OG",), "THR": ("OG1",), "TRP": ("NE1",), "TYR": ("OH",), "CYS": ("SG",)}
ACCEPTORS = {"*": ("O", "OXT"), "ASN": ("OD1",), "ASP": ("OD1", "OD2"), "GLN": ("OE1",), "GLU": ("OE1", "OE2"),
             "HIS": ("ND1", "NE2"), "SER": ("OG",), "THR": ("OG1",), "TYR": ("OH",), "MET": ("SD",)}

# Planar groups (atom names of one residue) and the RMS out-of-plane distance (Å) above which a group is
# non-planar. 0.10 Å is the limit the wwPDB validation report applies to planar groups (restraint sigma
# 0.02 Å in Engh & Huber refinement dictionaries, so 0.10 Å is 5 sigma).
PLANAR_GROUPS = {
    "ring": {"PHE": ("CB", "CG", "CD1", "CD2", "CE1", "CE2", "CZ"),
             "TYR": ("CB", "CG", "CD1", "CD2", "CE1", "CE2", "CZ", "OH"),
             "HIS": ("CB", "CG", "ND1", "CD2", "CE1", "NE2"),
             "TRP": ("CB", "CG", "CD1", "CD2", "NE1", "CE2", "CE3", "CZ2", "CZ3", "CH2")},
    "guanidinium": {"ARG": ("CD", "NE", "CZ", "NH1", "NH2")},
    "amide": {"ASN": ("CB", "CG", "OD1", "ND2"), "GLN": ("CG", "CD", "OE1", "NE2")},
    "carboxylate": {"ASP": ("CB", "CG", "OD1", "OD2"), "GLU": ("CG", "CD", "OE1", "OE2")},
}
PLANARITY_LIMIT = {"peptide": 0.10, "ring": 0.10, "guanidinium": 0.10, "amide": 0.10, "carboxylate": 0.10,
                   "c_terminus": 0.10}
PLANAR_KINDS = ("peptide", "ring", "guanidinium", "amide", "carboxylate", "c_terminus")
MAX_GROUP = 10


@lru_cache(maxsize=1)
def angle_table() -> dict:
    """The Engh & Huber angle table (``data/engh_huber_angles.json``), read once."""
    with open(DATA_DIR / "engh_huber_angles.json", encoding="utf-8") as fh:
        return json.load(fh)


def _slot(resname: str, atom: str) -> int:
    return rc.slot_names(resname).index(atom)


def template_bonds(resname: str) -> list[tuple[str, str]]:
    """Bonds (atom name pairs) of a residue template, from the bonds implied by its Engh & Huber angles
    (every angle A-B-C has bonds A-B and B-C); the C-terminal C-OXT bond is added per chain end."""
    bonds = set()
    for key in angle_table()["residues"][resname]:
        a, b, c = key.split("-")
        bonds.add(tuple(sorted((a, b))))
        bonds.add(tuple(sorted((b, c))))
    return sorted(bonds)


def _peptide_class(resname: str) -> str:
    return resname if resname in ("GLY", "PRO") else "general"


@dataclass(frozen=True)
class ValidityTopology:
    """Bond graph, angles, overlap exclusions and planar groups of one residue list, derived once.

    atoms [M] flat slot indices of the present atoms; bonds [B, 2], angles [A, 3] (vertex in the middle) in
    flat slots; angle_ideal, angle_sigma [A] degrees; angle_residue [A] residue of the vertex; excluded: sorted
    keys i * N*S + j (i < j, flat slots) of the pairs at most three bonds apart; radii, donor, acceptor [N*S];
    groups [G, MAX_GROUP] flat slots (-1 padded), group_kind [G] index into PLANAR_KINDS, group_residue [G].
    """

    n_residues: int
    restype: np.ndarray
    present: np.ndarray
    previous: np.ndarray
    atoms: np.ndarray
    bonds: np.ndarray
    disulfides: np.ndarray
    angles: np.ndarray
    angle_ideal: np.ndarray
    angle_sigma: np.ndarray
    angle_residue: np.ndarray
    excluded: np.ndarray
    radii: np.ndarray
    donor: np.ndarray
    acceptor: np.ndarray
    groups: np.ndarray
    group_kind: np.ndarray
    group_residue: np.ndarray

    @property
    def residue_of_slot(self) -> np.ndarray:
        return np.repeat(np.arange(self.n_residues), S)


def find_disulfides(xyz: np.ndarray, present: np.ndarray, restype: np.ndarray,
                    cutoff: float = DISULFIDE_DISTANCE) -> np.ndarray:
    """[D, 2] residue pairs (i < j) of CYS whose SG atoms lie closer than ``cutoff`` Å."""
    cys = np.flatnonzero((restype == rc.RESTYPE_INDEX["CYS"]) & present[:, _slot("CYS", "SG")])
    if len(cys) < 2:
        return np.zeros((0, 2), dtype=np.int64)
    sg = xyz[cys, _slot("CYS", "SG")]
    pairs = cKDTree(sg).query_pairs(cutoff, output_type="ndarray")
    return np.sort(cys[pairs], axis=1).astype(np.int64) if len(pairs) else np.zeros((0, 2), dtype=np.int64)


def validity_topology(restype, present, previous, disulfides=None) -> ValidityTopology:
    """Derive the ``ValidityTopology`` of residues ``restype`` [N] with atoms ``present`` [N, S], bonded
    predecessors ``previous`` [N] and disulfide residue pairs ``disulfides`` [D, 2] (from ``find_disulfides``)."""
    restype = np.asarray(restype, dtype=np.int64)
    present = np.asarray(present, dtype=bool)
    previous = np.asarray(previous, dtype=np.int64)
    n = len(restype)
    disulfides = np.zeros((0, 2), dtype=np.int64) if disulfides is None else np.asarray(disulfides, np.int64)
    table = angle_table()
    names = [rc.slot_names(rc.RESTYPES[t]) for t in restype]
    has_next = np.zeros(n, dtype=bool)
    has_next[previous[previous >= 0]] = True

    def at(r, atom):
        """Flat slot of an atom of residue r, or -1 if absent."""
        if atom not in names[r]:
            return -1
        k = names[r].index(atom)
        return r * S + k if present[r, k] else -1

    bonds, angles, ideal, sigma, owner = [], [], [], [], []

    def add_angle(a, b, c, value, r):
        if a >= 0 and b >= 0 and c >= 0:
            angles.append((a, b, c))
            ideal.append(value[0])
            sigma.append(value[1])
            owner.append(r)

    for r in range(n):
        resname = rc.RESTYPES[restype[r]]
        for a, b in template_bonds(resname):
            i, j = at(r, a), at(r, b)
            if i >= 0 and j >= 0:
                bonds.append((i, j))
        terminal_c = not has_next[r] and at(r, "OXT") >= 0
        for key, value in table["residues"][resname].items():
            if terminal_c and key == "CA-C-O":
                continue
            a, b, c = key.split("-")
            add_angle(at(r, a), at(r, b), at(r, c), value, r)
        if at(r, "OXT") >= 0 and at(r, "C") >= 0:
            bonds.append((at(r, "C"), at(r, "OXT")))
            for key, value in table["c_terminus"].items():
                a, b, c = key.split("-")
                if key == "CA-C-O" and not terminal_c:
                    continue
                add_angle(at(r, a), at(r, b), at(r, c), value, r)
        p = previous[r]
        if p >= 0 and at(p, "C") >= 0 and at(r, "N") >= 0:
            bonds.append((at(p, "C"), at(r, "N")))
            c_side = table["peptide"][_peptide_class(rc.RESTYPES[restype[p]])]
            n_side = table["peptide"][_peptide_class(resname)]
            add_angle(at(p, "CA"), at(p, "C"), at(r, "N"), c_side["CA-C-N"], p)
            add_angle(at(p, "O"), at(p, "C"), at(r, "N"), c_side["O-C-N"], p)
            add_angle(at(p, "C"), at(r, "N"), at(r, "CA"), n_side["C-N-CA"], r)
            if resname == "PRO":
                add_angle(at(p, "C"), at(r, "N"), at(r, "CD"), n_side["C-N-CD"], r)
    for i, j in disulfides:
        sg_i, sg_j = at(i, "SG"), at(j, "SG")
        if sg_i >= 0 and sg_j >= 0:
            bonds.append((sg_i, sg_j))
            add_angle(at(i, "CB"), sg_i, sg_j, table["disulfide"]["CB-SG-SG"], i)
            add_angle(at(j, "CB"), sg_j, sg_i, table["disulfide"]["CB-SG-SG"], j)
    bonds = np.sort(np.asarray(bonds, dtype=np.int64).reshape(-1, 2), axis=1)
    atoms = np.flatnonzero(present.ravel())
    excluded = _within_three_bonds(bonds, n * S)
    flat_names = [nm for row in names for nm in row]
    flat_res = [rc.RESTYPES[t] for t in restype for _ in range(S)]
    elements = np.array([nm[:1] for nm in flat_names])
    radii = np.array([SP2_CARBON_RADIUS if nm in SP2_CARBONS["*"] + SP2_CARBONS.get(res, ()) else VDW_RADII.get(e, 1.70)
                      for nm, res, e in zip(flat_names, flat_res, elements)])
    donor = np.array([nm in DONORS["*"] + DONORS.get(res, ()) and not (res == "PRO" and nm == "N")
                      for nm, res in zip(flat_names, flat_res)])
    acceptor = np.array([nm in ACCEPTORS["*"] + ACCEPTORS.get(res, ()) for nm, res in zip(flat_names, flat_res)])
    groups, kinds, group_res = [], [], []

    def add_group(slots, kind, r):
        if slots and all(s >= 0 for s in slots):
            groups.append(list(slots) + [-1] * (MAX_GROUP - len(slots)))
            kinds.append(PLANAR_KINDS.index(kind))
            group_res.append(r)

    for r in range(n):
        resname = rc.RESTYPES[restype[r]]
        p = previous[r]
        if p >= 0:
            pep = [at(p, "CA"), at(p, "C"), at(p, "O"), at(r, "N"), at(r, "CA")]
            if resname == "PRO":
                pep.append(at(r, "CD"))
            add_group(pep, "peptide", r)
        for kind, members in PLANAR_GROUPS.items():
            if resname in members:
                add_group([at(r, a) for a in members[resname]], kind, r)
        if at(r, "OXT") >= 0:
            add_group([at(r, "CA"), at(r, "C"), at(r, "O"), at(r, "OXT")], "c_terminus", r)
    return ValidityTopology(
        n_residues=n, restype=restype, present=present, previous=previous, atoms=atoms, bonds=bonds,
        disulfides=disulfides, angles=np.asarray(angles, dtype=np.int64).reshape(-1, 3),
        angle_ideal=np.asarray(ideal, dtype=np.float64), angle_sigma=np.asarray(sigma, dtype=np.float64),
        angle_residue=np.asarray(owner, dtype=np.int64), excluded=excluded, radii=radii, donor=donor,
        acceptor=acceptor, groups=np.asarray(groups, dtype=np.int64).reshape(-1, MAX_GROUP),
        group_kind=np.asarray(kinds, dtype=np.int64), group_residue=np.asarray(group_res, dtype=np.int64))


def _within_three_bonds(bonds: np.ndarray, n_slots: int) -> np.ndarray:
    """Sorted keys i * n_slots + j (i < j) of the atom pairs 1, 2 or 3 bonds apart in the bond graph."""
    if len(bonds) == 0:
        return np.zeros(0, dtype=np.int64)
    ones = np.ones(len(bonds), dtype=np.int32)
    a = sparse.coo_matrix((ones, (bonds[:, 0], bonds[:, 1])), shape=(n_slots, n_slots)).tocsr()
    a = ((a + a.T) > 0).astype(np.int32)
    a2 = a @ a
    reach = (a + a2 + a2 @ a) > 0
    i, j = sparse.triu(reach, k=1).nonzero()
    return np.unique(i.astype(np.int64) * n_slots + j)


def bond_angles(flat: np.ndarray, angles: np.ndarray) -> np.ndarray:
    """Angles [A] degrees at the middle atom of each triple; flat [N*S, 3] Å, angles [A, 3] flat slots."""
    u = flat[angles[:, 0]] - flat[angles[:, 1]]
    v = flat[angles[:, 2]] - flat[angles[:, 1]]
    cos = (u * v).sum(-1) / np.maximum(np.linalg.norm(u, axis=-1) * np.linalg.norm(v, axis=-1), 1e-12)
    return np.degrees(np.arccos(np.clip(cos, -1.0, 1.0)))


def angle_outliers(topo: ValidityTopology, xyz: np.ndarray) -> dict:
    """Engh & Huber angle outliers (> 4 sigma): residues with one [N] bool, outlier count, max |z|."""
    flat = xyz.reshape(-1, 3)
    z = np.abs(bond_angles(flat, topo.angles) - topo.angle_ideal) / topo.angle_sigma
    bad = z > ANGLE_OUTLIER_SIGMA
    residues = np.zeros(topo.n_residues, dtype=bool)
    residues[topo.angle_residue[bad]] = True
    return {"residues": residues, "count": int(bad.sum()), "max_z": float(z.max()) if z.size else 0.0, "z": z}


def angle_deviation(topo: ValidityTopology, xyz: np.ndarray, ref_xyz: np.ndarray) -> dict:
    """Deviation (degrees) of every template angle from the reference structure's: mean, max, and residues [N]
    with an angle more than 15° away."""
    dev = np.abs(bond_angles(xyz.reshape(-1, 3), topo.angles) - bond_angles(ref_xyz.reshape(-1, 3), topo.angles))
    residues = np.zeros(topo.n_residues, dtype=bool)
    residues[topo.angle_residue[dev > ANGLE_REFERENCE_LIMIT_DEG]] = True
    return {"mean": float(dev.mean()) if dev.size else 0.0, "max": float(dev.max()) if dev.size else 0.0,
            "residues": residues}


def in_sorted(keys: np.ndarray, table: np.ndarray) -> np.ndarray:
    """keys [K] -> [K] bool: which are in ``table`` (sorted, unique), by binary search (np.isin hashes both)."""
    if len(table) == 0:
        return np.zeros(len(keys), dtype=bool)
    at = np.searchsorted(table, keys).clip(max=len(table) - 1)
    return table[at] == keys


def severe_overlaps(topo: ValidityTopology, xyz: np.ndarray) -> dict:
    """Severe overlaps: pairs [P, 2] (flat slots), overlap [P] Å, residues [N] bool with one."""
    flat = xyz.reshape(-1, 3)
    atoms = topo.atoms
    pts = flat[atoms]
    finite = np.isfinite(pts).all(-1)
    atoms, pts = atoms[finite], pts[finite]
    reach = 2 * max(VDW_RADII.values()) - SEVERE_OVERLAP
    pairs = cKDTree(pts).query_pairs(reach, output_type="ndarray")
    residues = np.zeros(topo.n_residues, dtype=bool)
    if len(pairs) == 0:
        return {"pairs": np.zeros((0, 2), dtype=np.int64), "overlap": np.zeros(0), "residues": residues}
    pairs = np.sort(atoms[pairs], axis=1)
    n_slots = topo.n_residues * S
    pairs = pairs[~in_sorted(pairs[:, 0] * n_slots + pairs[:, 1], topo.excluded)]
    i, j = pairs[:, 0], pairs[:, 1]
    d = np.linalg.norm(flat[i] - flat[j], axis=-1)
    overlap = topo.radii[i] + topo.radii[j] - d
    hbond = (topo.donor[i] & topo.acceptor[j]) | (topo.donor[j] & topo.acceptor[i])
    severe = np.where(hbond, d < HBOND_OVERLAP_DISTANCE, overlap >= SEVERE_OVERLAP)
    pairs, overlap = pairs[severe], overlap[severe]
    residues[pairs.ravel() // S] = True
    return {"pairs": pairs, "overlap": overlap, "residues": residues}


def ideal_cbeta(xyz: np.ndarray, restype: np.ndarray) -> np.ndarray:
    """Ideal CB [N, 3] Å from N, CA, C: the point at the Engh & Huber CA-CB length whose N-CA-CB and CB-CA-C
    angles are the Engh & Huber means of the residue type, on the L side of the N-CA-C plane."""
    table = angle_table()
    names = [rc.RESTYPES[t] for t in restype]
    bb = table["ca_cb_bond"]
    length = np.array([bb.get(r, bb["default"]) for r in names])
    res = table["residues"]
    a1 = np.radians([res[r]["N-CA-CB"][0] if "N-CA-CB" in res[r] else 110.5 for r in names])
    a2 = np.radians([res[r]["CB-CA-C"][0] if "CB-CA-C" in res[r] else 110.1 for r in names])
    n, ca, c = xyz[:, 0], xyz[:, 1], xyz[:, 2]
    u = n - ca
    v = c - ca
    u = u / np.maximum(np.linalg.norm(u, axis=-1, keepdims=True), 1e-12)
    v = v / np.maximum(np.linalg.norm(v, axis=-1, keepdims=True), 1e-12)
    g = (u * v).sum(-1)
    det = np.maximum(1.0 - g ** 2, 1e-12)
    alpha = (np.cos(a1) - g * np.cos(a2)) / det
    beta = (np.cos(a2) - g * np.cos(a1)) / det
    inplane = alpha[:, None] * u + beta[:, None] * v
    w = np.cross(u, v)
    w_norm2 = np.maximum((w ** 2).sum(-1), 1e-12)
    gamma = np.sqrt(np.maximum(1.0 - (inplane ** 2).sum(-1), 0.0) / w_norm2)
    return ca + length[:, None] * (inplane + gamma[:, None] * w)


def cbeta_deviation(xyz: np.ndarray, present: np.ndarray, restype: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """(deviation [N] Å of CB from ``ideal_cbeta``, defined [N] bool: N, CA, C, CB present)."""
    defined = present[:, [0, 1, 2, 4]].all(-1)
    dev = np.linalg.norm(xyz[:, 4] - ideal_cbeta(xyz, restype), axis=-1)
    return np.where(defined, dev, 0.0), defined


def plane_rms(points: np.ndarray, mask: np.ndarray) -> np.ndarray:
    """RMS distance [G] Å of the points [G, K, 3] (mask [G, K]) from their least-squares plane."""
    count = np.maximum(mask.sum(-1, keepdims=True), 1)
    centre = (points * mask[..., None]).sum(1) / count
    centred = (points - centre[:, None]) * mask[..., None]
    if len(points) == 0:
        return np.zeros(0)
    smallest = np.linalg.svd(centred, compute_uv=False)[:, -1]
    return smallest / np.sqrt(count[:, 0])


def planarity(topo: ValidityTopology, xyz: np.ndarray, omega: np.ndarray | None = None) -> dict:
    """RMS out-of-plane distance [G] Å per planar group; non-planar [G] bool (above ``PLANARITY_LIMIT`` of the
    kind, or a peptide whose omega [N] rad (the bond before residue r) is > 30° from both 0° and 180°)."""
    flat = xyz.reshape(-1, 3)
    mask = topo.groups >= 0
    pts = flat[np.maximum(topo.groups, 0)]
    rms = plane_rms(pts, mask)
    limit = np.array([PLANARITY_LIMIT[PLANAR_KINDS[k]] for k in topo.group_kind])
    bad = rms > limit
    if omega is not None and len(bad):
        peptide = topo.group_kind == PLANAR_KINDS.index("peptide")
        w = np.degrees(np.abs(omega[topo.group_residue]))
        twisted = (w > OMEGA_TWIST_LIMIT_DEG) & (w < 180.0 - OMEGA_TWIST_LIMIT_DEG)
        bad |= peptide & twisted
    return {"rms": rms, "nonplanar": bad}


VALIDITY_KEYS = (  # (key, column title, format): the figures ``score_validity`` returns, in report order
    ("angle_outlier_residue_pct", "angle outlier res. (%)", ".2f"),
    ("overlap_per_1000_atoms", "severe overlaps /1000 atoms", ".2f"),
    ("overlap_residue_pct", "overlap res. (%)", ".2f"),
    ("rotamer_outlier_pct", "rotamer outliers (%)", ".2f"),
    ("ramachandran_outlier_pct", "Rama outliers (%)", ".2f"),
    ("cbeta_outlier_pct", "CB dev > 0.25 Å (%)", ".2f"),
    ("nonplanar_group_pct", "non-planar groups (%)", ".2f"),
    ("d_residue_pct", "D residues (%)", ".2f"),
    ("cis_peptide_pct", "non-Pro cis (%)", ".2f"),
)
VALIDITY_DETAIL_KEYS = (
    ("angle_outliers", "angle outliers", ".1f"),
    ("angle_max_z", "max angle |z|", ".1f"),
    ("severe_overlaps", "severe overlaps", ".1f"),
    ("max_overlap", "max overlap (Å)", ".2f"),
    ("rotamer_not_favoured_pct", "rotamer not favoured (%)", ".2f"),
    ("ramachandran_not_favoured_pct", "Rama not favoured (%)", ".2f"),
    ("cbeta_max_deviation", "max CB dev (Å)", ".2f"),
    ("nonplanar_peptide_pct", "non-planar peptides (%)", ".2f"),
    ("nonplanar_ring_pct", "non-planar rings (%)", ".2f"),
    ("nonplanar_guanidinium_pct", "non-planar guanidinium (%)", ".2f"),
    ("nonplanar_amide_pct", "non-planar amides (%)", ".2f"),
    ("nonplanar_carboxylate_pct", "non-planar carboxylates (%)", ".2f"),
    ("nonplanar_c_terminus_pct", "non-planar C-termini (%)", ".2f"),
    ("angle_deviation_mean", "angle dev. from ref, mean (°)", ".2f"),
    ("angle_deviation_max", "angle dev. from ref, max (°)", ".1f"),
    ("angle_deviation_residue_pct", "res. with angle > 15° off ref (%)", ".2f"),
)


def _pct(flags: np.ndarray, scored: np.ndarray | None = None) -> float:
    n = len(flags) if scored is None else int(scored.sum())
    count = flags.sum() if scored is None else (flags & scored).sum()
    return 100.0 * float(count) / n if n else 0.0


def score_validity(topo: ValidityTopology, xyz: np.ndarray, ref_xyz: np.ndarray | None = None, wells=None,
                   details: bool = False) -> dict:
    """Every validity figure of one structure xyz [N, S, 3] Å (chain ends included); with ``ref_xyz`` also the
    bond-angle deviation from the reference. Percentages are of residues (planarity: of planar groups).
    ``details`` adds per-residue / per-item arrays under "details"."""
    from latcpb.metrics import structure as st
    from latcpb.metrics import torsions as tor
    from latcpb.metrics import wells as wl

    xyz = np.asarray(xyz, dtype=np.float64)
    out = {}
    ang = angle_outliers(topo, xyz)
    out["angle_outlier_residue_pct"] = _pct(ang["residues"])
    out["angle_outliers"] = float(ang["count"])
    out["angle_max_z"] = ang["max_z"]
    ov = severe_overlaps(topo, xyz)
    out["severe_overlaps"] = float(len(ov["pairs"]))
    out["overlap_per_1000_atoms"] = 1000.0 * len(ov["pairs"]) / max(len(topo.atoms), 1)
    out["overlap_residue_pct"] = _pct(ov["residues"])
    out["max_overlap"] = float(ov["overlap"].max()) if len(ov["overlap"]) else 0.0
    phi, psi, omega, phi_m, psi_m, omega_m = tor.backbone_torsions(xyz, topo.present, topo.previous)
    rama = wl.ramachandran(phi, psi, phi_m & psi_m, topo.restype, wl.following_restype(topo.restype, topo.previous),
                           wells)
    out["ramachandran_outlier_pct"] = _pct(rama["outlier"], rama["scored"])
    out["ramachandran_not_favoured_pct"] = _pct(rama["not_favoured"], rama["scored"])
    chi, chi_m = tor.chi_angles(xyz, topo.present, topo.restype)
    rot = wl.rotamers(chi, chi_m, topo.restype, wells)
    out["rotamer_outlier_pct"] = _pct(rot["outlier"], rot["scored"])
    out["rotamer_not_favoured_pct"] = _pct(rot["not_favoured"], rot["scored"])
    cb_dev, cb_def = cbeta_deviation(xyz, topo.present, topo.restype)
    cb_bad = cb_def & (cb_dev > CBETA_LIMIT)
    out["cbeta_outlier_pct"] = _pct(cb_bad, cb_def)
    out["cbeta_max_deviation"] = float(cb_dev[cb_def].max()) if cb_def.any() else 0.0
    plan = planarity(topo, xyz, np.where(omega_m, omega, np.pi))
    out["nonplanar_group_pct"] = _pct(plan["nonplanar"])
    for k, kind in enumerate(PLANAR_KINDS):
        sel = topo.group_kind == k
        out[f"nonplanar_{kind}_pct"] = _pct(plan["nonplanar"][sel]) if sel.any() else 0.0
    d_res = st.d_residues(xyz, topo.present)
    chiral = topo.present[:, [0, 1, 2, 4]].all(-1)
    out["d_residue_pct"] = _pct(d_res, chiral)
    cis = tor.cis_peptides(omega, omega_m, topo.restype)
    out["cis_peptide_pct"] = _pct(cis, omega_m & (topo.restype != rc.RESTYPE_INDEX["PRO"]))
    if ref_xyz is not None:
        dev = angle_deviation(topo, xyz, np.asarray(ref_xyz, dtype=np.float64))
        out["angle_deviation_mean"] = dev["mean"]
        out["angle_deviation_max"] = dev["max"]
        out["angle_deviation_residue_pct"] = _pct(dev["residues"])
    if details:
        out["details"] = {"angle_z": ang["z"], "angle_outlier_residues": ang["residues"],
                          "overlap_pairs": ov["pairs"], "overlap": ov["overlap"], "overlap_residues": ov["residues"],
                          "rama_outlier": rama["outlier"], "rotamer_outlier": rot["outlier"], "cbeta_deviation": cb_dev,
                          "plane_rms": plan["rms"], "nonplanar": plan["nonplanar"], "d_residues": d_res, "cis": cis}
    return out


def chain_predecessors(chain_index) -> np.ndarray:
    """[N] index of the residue bonded before each residue (-1 at chain starts) from chain labels [N]."""
    chain = np.asarray(chain_index)
    previous = np.full(len(chain), -1, dtype=np.int64)
    same = chain[1:] == chain[:-1]
    previous[1:][same] = np.arange(len(chain) - 1)[same]
    return previous


def structure_topology(atoms, source: str = "structure"):
    """(AllAtomMapping, ValidityTopology) of an all-atom AtomGroup as read by ``map_allatom`` (its chains and
    residues; disulfides from the current frame). ``mapping.slots(positions)`` gives the [N, S, 3] coordinates."""
    from latcpb.data.featurize import map_allatom

    mapping = map_allatom(atoms, source=source)
    layout = mapping.topology.layout
    restype, previous = layout.restype, chain_predecessors(layout.chain_index)
    xyz = mapping.slots(atoms.positions.astype(np.float64))
    topo = validity_topology(restype, mapping.present, previous, find_disulfides(xyz, mapping.present, restype))
    return mapping, topo


def structure_validity(atoms, source: str = "structure", wells=None) -> list[dict]:
    """Validity figures of every frame of an all-atom Universe/AtomGroup on its own (no reference): one dict per
    frame. Chains and residues as ``latcpb.data.featurize.map_allatom`` reads them; disulfides from frame 0."""
    atoms = atoms.atoms if hasattr(atoms, "atoms") else atoms
    traj = atoms.universe.trajectory
    traj[0]
    mapping, topo = structure_topology(atoms, source)
    return [score_validity(topo, mapping.slots(atoms.positions.astype(np.float64)), wells=wells) for _ in traj]
