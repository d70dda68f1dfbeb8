"""Residue geometry kept as readable data; derived arrays are computed once below.

Layout: every residue has ``ATOMS_PER_RESIDUE = 15`` slots. Slots 0-13 follow AlphaFold's atom14 order
(N, CA, C, O, CB, side chain ...); slot 14 is OXT, present only on the C-terminal residue of a chain.

Internal coordinates: every atom other than CA is placed from a parent triple (a, b, c) with
bond length d = |c - atom|, bond angle theta = angle(b, c, atom) and torsion tau = dihedral(a, b, c, atom).
N and C are placed from the CA trace (see ``latcpb.geometry.internal_coords``); all other atoms from atoms of
their own residue, listed in ``PARENTS``.
"""
from __future__ import annotations

import numpy as np

# Standard amino acids, index = residue type.
RESTYPES = [
    "ALA", "ARG", "ASN", "ASP", "CYS", "GLN", "GLU", "GLY", "HIS", "ILE",
    "LEU", "LYS", "MET", "PHE", "PRO", "SER", "THR", "TRP", "TYR", "VAL",
]
RESTYPE_INDEX = {name: i for i, name in enumerate(RESTYPES)}
ONE_LETTER = dict(zip(RESTYPES, "ARNDCQEGHILKMFPSTWYV"))
N_RESTYPES = len(RESTYPES)

ATOMS_PER_RESIDUE = 15
OXT_SLOT = 14
BACKBONE_ATOMS = ("N", "CA", "C", "O")

# Heavy atoms per residue in slot order (OXT excluded; it always sits in slot 14).
RESIDUE_ATOMS = {
    "ALA": ["N", "CA", "C", "O", "CB"],
    "ARG": ["N", "CA", "C", "O", "CB", "CG", "CD", "NE", "CZ", "NH1", "NH2"],
    "ASN": ["N", "CA", "C", "O", "CB", "CG", "OD1", "ND2"],
    "ASP": ["N", "CA", "C", "O", "CB", "CG", "OD1", "OD2"],
    "CYS": ["N", "CA", "C", "O", "CB", "SG"],
    "GLN": ["N", "CA", "C", "O", "CB", "CG", "CD", "OE1", "NE2"],
    "GLU": ["N", "CA", "C", "O", "CB", "CG", "CD", "OE1", "OE2"],
    "GLY": ["N", "CA", "C", "O"],
    "HIS": ["N", "CA", "C", "O", "CB", "CG", "ND1", "CD2", "CE1", "NE2"],
    "ILE": ["N", "CA", "C", "O", "CB", "CG1", "CG2", "CD1"],
    "LEU": ["N", "CA", "C", "O", "CB", "CG", "CD1", "CD2"],
    "LYS": ["N", "CA", "C", "O", "CB", "CG", "CD", "CE", "NZ"],
    "MET": ["N", "CA", "C", "O", "CB", "CG", "SD", "CE"],
    "PHE": ["N", "CA", "C", "O", "CB", "CG", "CD1", "CD2", "CE1", "CE2", "CZ"],
    "PRO": ["N", "CA", "C", "O", "CB", "CG", "CD"],
    "SER": ["N", "CA", "C", "O", "CB", "OG"],
    "THR": ["N", "CA", "C", "O", "CB", "OG1", "CG2"],
    "TRP": ["N", "CA", "C", "O", "CB", "CG", "CD1", "CD2", "NE1", "CE2", "CE3", "CZ2", "CZ3", "CH2"],
    "TYR": ["N", "CA", "C", "O", "CB", "CG", "CD1", "CD2", "CE1", "CE2", "CZ", "OH"],
    "VAL": ["N", "CA", "C", "O", "CB", "CG1", "CG2"],
}

# Parent triple (a, b, c) of every atom placed inside its residue: c is the bonded parent.
_BACKBONE_PARENTS = {"O": ("N", "CA", "C"), "OXT": ("N", "CA", "C"), "CB": ("C", "N", "CA")}
_SIDE_CHAIN_PARENTS = {
    "ALA": {},
    "ARG": {"CG": ("N", "CA", "CB"), "CD": ("CA", "CB", "CG"), "NE": ("CB", "CG", "CD"),
            "CZ": ("CG", "CD", "NE"), "NH1": ("CD", "NE", "CZ"), "NH2": ("CD", "NE", "CZ")},
    "ASN": {"CG": ("N", "CA", "CB"), "OD1": ("CA", "CB", "CG"), "ND2": ("CA", "CB", "CG")},
    "ASP": {"CG": ("N", "CA", "CB"), "OD1": ("CA", "CB", "CG"), "OD2": ("CA", "CB", "CG")},
    "CYS": {"SG": ("N", "CA", "CB")},
    "GLN": {"CG": ("N", "CA", "CB"), "CD": ("CA", "CB", "CG"), "OE1": ("CB", "CG", "CD"),
            "NE2": ("CB", "CG", "CD")},
    "GLU": {"CG": ("N", "CA", "CB"), "CD": ("CA", "CB", "CG"), "OE1": ("CB", "CG", "CD"),
            "OE2": ("CB", "CG", "CD")},
    "GLY": {},
    "HIS": {"CG": ("N", "CA", "CB"), "ND1": ("CA", "CB", "CG"), "CD2": ("CA", "CB", "CG"),
            "CE1": ("CB", "CG", "ND1"), "NE2": ("CB", "CG", "CD2")},
    "ILE": {"CG1": ("N", "CA", "CB"), "CG2": ("N", "CA", "CB"), "CD1": ("CA", "CB", "CG1")},
    "LEU": {"CG": ("N", "CA", "CB"), "CD1": ("CA", "CB", "CG"), "CD2": ("CA", "CB", "CG")},
    "LYS": {"CG": ("N", "CA", "CB"), "CD": ("CA", "CB", "CG"), "CE": ("CB", "CG", "CD"),
            "NZ": ("CG", "CD", "CE")},
    "MET": {"CG": ("N", "CA", "CB"), "SD": ("CA", "CB", "CG"), "CE": ("CB", "CG", "SD")},
    "PHE": {"CG": ("N", "CA", "CB"), "CD1": ("CA", "CB", "CG"), "CD2": ("CA", "CB", "CG"),
            "CE1": ("CB", "CG", "CD1"), "CE2": ("CB", "CG", "CD2"), "CZ": ("CG", "CD1", "CE1")},
    "PRO": {"CG": ("N", "CA", "CB"), "CD": ("CA", "CB", "CG")},
    "SER": {"OG": ("N", "CA", "CB")},
    "THR": {"OG1": ("N", "CA", "CB"), "CG2": ("N", "CA", "CB")},
    "TRP": {"CG": ("N", "CA", "CB"), "CD1": ("CA", "CB", "CG"), "CD2": ("CA", "CB", "CG"),
            "NE1": ("CB", "CG", "CD1"), "CE2": ("CB", "CG", "CD2"), "CE3": ("CB", "CG", "CD2"),
            "CZ2": ("CG", "CD2", "CE2"), "CZ3": ("CG", "CD2", "CE3"), "CH2": ("CD2", "CE2", "CZ2")},
    "TYR": {"CG": ("N", "CA", "CB"), "CD1": ("CA", "CB", "CG"), "CD2": ("CA", "CB", "CG"),
            "CE1": ("CB", "CG", "CD1"), "CE2": ("CB", "CG", "CD2"), "CZ": ("CG", "CD1", "CE1"),
            "OH": ("CD1", "CE1", "CZ")},
    "VAL": {"CG1": ("N", "CA", "CB"), "CG2": ("N", "CA", "CB")},
}

# Side-chain torsions (chi1..chi4) as the four atoms defining them.
CHI_ATOMS = {
    "ALA": [],
    "ARG": [("N", "CA", "CB", "CG"), ("CA", "CB", "CG", "CD"), ("CB", "CG", "CD", "NE"), ("CG", "CD", "NE", "CZ")],
    "ASN": [("N", "CA", "CB", "CG"), ("CA", "CB", "CG", "OD1")],
    "ASP": [("N", "CA", "CB", "CG"), ("CA", "CB", "CG", "OD1")],
    "CYS": [("N", "CA", "CB", "SG")],
    "GLN": [("N", "CA", "CB", "CG"), ("CA", "CB", "CG", "CD"), ("CB", "CG", "CD", "OE1")],
    "GLU": [("N", "CA", "CB", "CG"), ("CA", "CB", "CG", "CD"), ("CB", "CG", "CD", "OE1")],
    "GLY": [],
    "HIS": [("N", "CA", "CB", "CG"), ("CA", "CB", "CG", "ND1")],
    "ILE": [("N", "CA", "CB", "CG1"), ("CA", "CB", "CG1", "CD1")],
    "LEU": [("N", "CA", "CB", "CG"), ("CA", "CB", "CG", "CD1")],
    "LYS": [("N", "CA", "CB", "CG"), ("CA", "CB", "CG", "CD"), ("CB", "CG", "CD", "CE"), ("CG", "CD", "CE", "NZ")],
    "MET": [("N", "CA", "CB", "CG"), ("CA", "CB", "CG", "SD"), ("CB", "CG", "SD", "CE")],
    "PHE": [("N", "CA", "CB", "CG"), ("CA", "CB", "CG", "CD1")],
    "PRO": [("N", "CA", "CB", "CG"), ("CA", "CB", "CG", "CD")],
    "SER": [("N", "CA", "CB", "OG")],
    "THR": [("N", "CA", "CB", "OG1")],
    "TRP": [("N", "CA", "CB", "CG"), ("CA", "CB", "CG", "CD1")],
    "TYR": [("N", "CA", "CB", "CG"), ("CA", "CB", "CG", "CD1")],
    "VAL": [("N", "CA", "CB", "CG1")],
}

# Intrinsic torsion profile of each chi: 3 where the bond joins two sp3 atoms (staggered minima at 60, 180 and -60
# degrees, eclipsed maxima at 0 and +-120), 2 for the bond to a symmetric aromatic ring (PHE, TYR chi2: minima at
# +-90), 0 where the profile is broad (bonds to carboxylates, amides, imidazole, indole, ARG NE) or the torsion is
# held by a ring (PRO).
CHI_PERIODICITY = {
    "ALA": (), "ARG": (3, 3, 3, 0), "ASN": (3, 0), "ASP": (3, 0), "CYS": (3,), "GLN": (3, 3, 0), "GLU": (3, 3, 0),
    "GLY": (), "HIS": (3, 0), "ILE": (3, 3), "LEU": (3, 3), "LYS": (3, 3, 3, 3), "MET": (3, 3, 3), "PHE": (3, 2),
    "PRO": (0, 0), "SER": (3,), "THR": (3,), "TRP": (3, 0), "TYR": (3, 2), "VAL": (3,),
}

# Bond lengths (Å) to the bonded parent, Engh & Huber (1991, 2001). Backbone values first, then overrides.
BACKBONE_BONDS = {"N-CA": 1.458, "CA-C": 1.525, "C-O": 1.231, "C-OXT": 1.249, "C-N": 1.329, "CA-CB": 1.530}
BOND_OVERRIDES = {
    "GLY": {"N-CA": 1.451, "CA-C": 1.516},
    "PRO": {"N-CA": 1.466, "C-N": 1.341},
    "ALA": {"CA-CB": 1.521},
    "ILE": {"CA-CB": 1.540}, "THR": {"CA-CB": 1.540}, "VAL": {"CA-CB": 1.540},
}
SIDE_CHAIN_BONDS = {
    "ARG": {"CB-CG": 1.520, "CG-CD": 1.520, "CD-NE": 1.460, "NE-CZ": 1.329, "CZ-NH1": 1.326, "CZ-NH2": 1.326},
    "ASN": {"CB-CG": 1.516, "CG-OD1": 1.231, "CG-ND2": 1.328},
    "ASP": {"CB-CG": 1.516, "CG-OD1": 1.249, "CG-OD2": 1.249},
    "CYS": {"CB-SG": 1.808},
    "GLN": {"CB-CG": 1.520, "CG-CD": 1.516, "CD-OE1": 1.231, "CD-NE2": 1.328},
    "GLU": {"CB-CG": 1.520, "CG-CD": 1.516, "CD-OE1": 1.249, "CD-OE2": 1.249},
    "GLY": {},
    "HIS": {"CB-CG": 1.497, "CG-ND1": 1.378, "CG-CD2": 1.354, "ND1-CE1": 1.321, "CD2-NE2": 1.374},
    "ILE": {"CB-CG1": 1.530, "CB-CG2": 1.521, "CG1-CD1": 1.513},
    "LEU": {"CB-CG": 1.530, "CG-CD1": 1.521, "CG-CD2": 1.521},
    "LYS": {"CB-CG": 1.520, "CG-CD": 1.520, "CD-CE": 1.520, "CE-NZ": 1.489},
    "MET": {"CB-CG": 1.520, "CG-SD": 1.803, "SD-CE": 1.791},
    "PHE": {"CB-CG": 1.502, "CG-CD1": 1.384, "CG-CD2": 1.384, "CD1-CE1": 1.382, "CD2-CE2": 1.382,
            "CE1-CZ": 1.382},
    "PRO": {"CB-CG": 1.492, "CG-CD": 1.503},
    "SER": {"CB-OG": 1.417},
    "THR": {"CB-OG1": 1.433, "CB-CG2": 1.521},
    "TRP": {"CB-CG": 1.498, "CG-CD1": 1.365, "CG-CD2": 1.433, "CD1-NE1": 1.374, "CD2-CE2": 1.409,
            "CD2-CE3": 1.398, "CE2-CZ2": 1.394, "CE3-CZ3": 1.382, "CZ2-CH2": 1.368},
    "TYR": {"CB-CG": 1.512, "CG-CD1": 1.389, "CG-CD2": 1.389, "CD1-CE1": 1.382, "CD2-CE2": 1.382,
            "CE1-CZ": 1.378, "CZ-OH": 1.376},
    "VAL": {"CB-CG1": 1.521, "CB-CG2": 1.521},
}

# Ring-closing bonds: bonded in the residue but not parent-child in the NeRF tree, so only consistent angles and
# torsions give them their length (Engh & Huber, Å). Aromatic rings close when their atoms beyond CG take the ideal
# planar geometry; the proline ring closes for a (chi1, chi2) pair that the idealiser solves for.
RING_CLOSING_BONDS = {
    "PHE": [("CE2", "CZ", 1.382)], "TYR": [("CE2", "CZ", 1.378)], "HIS": [("CE1", "NE2", 1.321)],
    "TRP": [("NE1", "CE2", 1.370), ("CZ3", "CH2", 1.400)], "PRO": [("N", "CD", 1.473)],
}
AROMATIC_RINGS = ("PHE", "TYR", "TRP", "HIS")  # planar rings: every atom beyond CG belongs to the ring system

# Symmetric side chains: the two names of each swapped pair denote chemically equivalent atoms, and sources name
# them either way. The canonical naming puts the defining torsion within 90 degrees of a centre chosen where the
# torsion is common (so that ordinary structures never sit at the cut): 0 for the carboxylates and for ARG (NH1 cis
# to CD, as IUPAC), 90 for the aromatic rings (whose chi2 clusters near +-90).
# Residue -> (torsion quadruple, centre in degrees, pairs swapped together).
SYMMETRIC_SWAPS = {
    "ASP": (("CA", "CB", "CG", "OD1"), 0.0, [("OD1", "OD2")]),
    "GLU": (("CB", "CG", "CD", "OE1"), 0.0, [("OE1", "OE2")]),
    "PHE": (("CA", "CB", "CG", "CD1"), 90.0, [("CD1", "CD2"), ("CE1", "CE2")]),
    "TYR": (("CA", "CB", "CG", "CD1"), 90.0, [("CD1", "CD2"), ("CE1", "CE2")]),
    "ARG": (("CD", "NE", "CZ", "NH1"), 0.0, [("NH1", "NH2")]),
}

# Covalent radii (Å) used to perceive bonds in metrics: a bond is a pair closer than 1.3 x the sum.
COVALENT_RADII = {"C": 0.76, "N": 0.71, "O": 0.66, "S": 1.05}


def element_of(atom_name: str) -> str:
    """Element of a standard protein heavy-atom name (first letter: C, N, O or S)."""
    return atom_name[0]


def parents_of(resname: str, atom: str) -> tuple[str, str, str]:
    """Parent triple (a, b, c) of an atom placed inside its residue."""
    if atom in _BACKBONE_PARENTS:
        return _BACKBONE_PARENTS[atom]
    return _SIDE_CHAIN_PARENTS[resname][atom]


def bond_length(resname: str, atom: str) -> float:
    """Engh & Huber length (Å) of the bond between ``atom`` and its bonded parent."""
    bb = {**BACKBONE_BONDS, **BOND_OVERRIDES.get(resname, {})}
    if atom == "N":
        return bb["N-CA"]
    if atom == "C":
        return bb["CA-C"]
    if atom == "O":
        return bb["C-O"]
    if atom == "OXT":
        return bb["C-OXT"]
    if atom == "CB":
        return bb["CA-CB"]
    parent = parents_of(resname, atom)[2]
    return SIDE_CHAIN_BONDS[resname][f"{parent}-{atom}"]


def slot_names(resname: str) -> list[str]:
    """Atom names of the 15 slots of a residue type ('' for empty slots)."""
    names = RESIDUE_ATOMS[resname] + [""] * (OXT_SLOT - len(RESIDUE_ATOMS[resname]))
    return names + ["OXT"]


def _derive_arrays():
    """Index arrays [20, 15, ...] derived once from the tables above."""
    n, s = N_RESTYPES, ATOMS_PER_RESIDUE
    mask = np.zeros((n, s), dtype=bool)          # atom exists (OXT counted; masked per chain end later)
    parents = np.tile(np.array([0, 1, 2]), (n, s, 1))  # parent slots (a, b, c); (N, CA, C) where unused
    level = np.full((n, s), -1, dtype=np.int64)    # build step; -1 for N, CA, C and empty slots
    bonds = np.full((n, s), 1.5)                   # Å (1.5 in empty slots keeps unused placements finite)
    chi_slot = np.full((n, 4), -1, dtype=np.int64)  # slot whose torsion is chi k
    chi_mask = np.zeros((n, 4), dtype=bool)
    elements = np.full((n, s), "", dtype=object)
    for r, resname in enumerate(RESTYPES):
        names = slot_names(resname)
        index = {name: k for k, name in enumerate(names) if name}
        for k, name in enumerate(names):
            if not name:
                continue
            mask[r, k] = True
            elements[r, k] = element_of(name)
            if name == "CA":
                continue
            bonds[r, k] = bond_length(resname, name)
            if name in ("N", "CA", "C"):
                continue
            parents[r, k] = [index[p] for p in parents_of(resname, name)]
        # build level: one more than the deepest parent placed inside the residue
        for _ in range(s):
            for k, name in enumerate(names):
                if name and name not in ("N", "CA", "C"):
                    level[r, k] = 1 + max(level[r, p] for p in parents[r, k])
        for c, quad in enumerate(CHI_ATOMS[resname]):
            chi_slot[r, c] = index[quad[3]]
            chi_mask[r, c] = True
    return mask, parents, level, bonds, chi_slot, chi_mask, elements


(RESTYPE_ATOM_MASK, RESTYPE_PARENTS, RESTYPE_BUILD_LEVEL, RESTYPE_BOND_LENGTHS,
 RESTYPE_CHI_SLOT, RESTYPE_CHI_MASK, RESTYPE_ELEMENTS) = _derive_arrays()
N_BUILD_LEVELS = int(RESTYPE_BUILD_LEVEL.max()) + 1


def _derive_symmetry():
    """RESTYPE_SYMMETRY_TORSION [20, 4] slots of the torsion that decides the naming (-1: not symmetric);
    RESTYPE_SYMMETRY_CENTRE [20] its canonical centre (rad); RESTYPE_SYMMETRY_SWAP [20, 15] slot permutation that
    renames the symmetric atoms (identity elsewhere)."""
    torsion = np.full((N_RESTYPES, 4), -1, dtype=np.int64)
    centre = np.zeros(N_RESTYPES)
    swap = np.tile(np.arange(ATOMS_PER_RESIDUE), (N_RESTYPES, 1))
    for resname, (quad, centre_deg, pairs) in SYMMETRIC_SWAPS.items():
        r, names = RESTYPE_INDEX[resname], slot_names(resname)
        torsion[r] = [names.index(a) for a in quad]
        centre[r] = np.radians(centre_deg)
        for a, b in pairs:
            i, j = names.index(a), names.index(b)
            swap[r, i], swap[r, j] = j, i
    return torsion, centre, swap


RESTYPE_SYMMETRY_TORSION, RESTYPE_SYMMETRY_CENTRE, RESTYPE_SYMMETRY_SWAP = _derive_symmetry()


def _derive_chi_periodicity():
    """RESTYPE_CHI_PERIODICITY [20, 4] int: ``CHI_PERIODICITY`` as an array (0 beyond the residue's chi count)."""
    period = np.zeros((N_RESTYPES, 4), dtype=np.int64)
    for r, resname in enumerate(RESTYPES):
        assert len(CHI_PERIODICITY[resname]) == len(CHI_ATOMS[resname]), resname
        period[r, :len(CHI_PERIODICITY[resname])] = CHI_PERIODICITY[resname]
    return period


RESTYPE_CHI_PERIODICITY = _derive_chi_periodicity()


def _derive_torsion_groups():
    """RESTYPE_TORSION_GROUP [20, 15]: the chi (0..3) that turns the atom's torsion, -1 for none: the chi atom
    itself and its siblings (atoms with the same parent triple, e.g. PHE CD2 with CD1, VAL CG2 with CG1). Turning a
    chi adds the same angle to every torsion of its group, which keeps branch points and rings intact."""
    group = np.full((N_RESTYPES, ATOMS_PER_RESIDUE), -1, dtype=np.int64)
    for r, resname in enumerate(RESTYPES):
        names = slot_names(resname)
        for c, quad in enumerate(CHI_ATOMS[resname]):
            for k, name in enumerate(names):
                if name and name not in ("N", "CA", "C") and parents_of(resname, name) == tuple(quad[:3]):
                    group[r, k] = c
    return group


RESTYPE_TORSION_GROUP = _derive_torsion_groups()


def _derive_aromatic_rings():
    """RESTYPE_AROMATIC_RING [20, 15] bool: the atoms beyond CG of the planar rings of ``AROMATIC_RINGS``."""
    ring = np.zeros((N_RESTYPES, ATOMS_PER_RESIDUE), dtype=bool)
    for name in AROMATIC_RINGS:
        ring[RESTYPE_INDEX[name], slot_names(name).index("CG") + 1:OXT_SLOT] = True
    return ring & RESTYPE_ATOM_MASK


RESTYPE_AROMATIC_RING = _derive_aromatic_rings()
