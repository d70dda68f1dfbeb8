"""Residue and atom name normalisation (CHARMM, Amber, GROMACS and PDB spellings -> PDB standard)."""
from __future__ import annotations

from latcpb.geometry.residue_constants import RESTYPE_INDEX

RESIDUE_ALIASES = {
    "HSD": "HIS", "HSE": "HIS", "HSP": "HIS", "HID": "HIS", "HIE": "HIS", "HIP": "HIS", "HISD": "HIS",
    "HISE": "HIS", "HISH": "HIS", "HISA": "HIS", "HISB": "HIS", "HIS1": "HIS", "HIS2": "HIS", "HSC": "HIS",
    "CYX": "CYS", "CYM": "CYS", "CYS2": "CYS", "CYN": "CYS", "CSS": "CYS",
    "ASH": "ASP", "ASPP": "ASP", "ASPH": "ASP",
    "GLH": "GLU", "GLUP": "GLU", "GLUH": "GLU",
    "LYN": "LYS", "LSN": "LYS", "LYSN": "LYS", "LYSH": "LYS", "LYP": "LYS",
    "ARGN": "ARG", "MSE": "MET",
}

# Capping groups and other residues that carry no CA to backmap.
CAPPING_GROUPS = frozenset({"ACE", "NME", "NMA", "NH2", "NHE", "FOR", "CT3"})

ATOM_ALIASES = {"OT1": "O", "O1": "O", "OC1": "O", "OT2": "OXT", "O2": "OXT", "OC2": "OXT", "OT": "OXT"}
RESIDUE_ATOM_ALIASES = {"ILE": {"CD": "CD1"}, "MET": {"SE": "SD"}}


def normalize_resname(name: str) -> str | None:
    """Standard three-letter name of a residue name, or None if it is not a standard amino acid.

    Handles CHARMM/Amber/GROMACS protonation variants and Amber 4-letter termini (NALA, CHIE ...).
    """
    name = name.strip().upper()
    if name in RESTYPE_INDEX:
        return name
    if name in RESIDUE_ALIASES:
        return RESIDUE_ALIASES[name]
    if len(name) == 4 and name[0] in "NC":
        inner = name[1:]
        if inner in RESTYPE_INDEX:
            return inner
        if inner in RESIDUE_ALIASES:
            return RESIDUE_ALIASES[inner]
    return None


def output_resname(name: str) -> str | None:
    """Residue name written to all-atom output: the input's spelling, so protonation and disulfide variants round-trip
    (HSD/HSE/HSP, HID/HIE/HIP, CYX, ASH, GLH, LYN, GROMACS HISD/LYSN ...), upper case; the Amber terminal prefix of
    4-letter names is dropped (NALA -> ALA, CHIE -> HIE: the output's termini are explicit), and MSE becomes MET
    (the output atoms are MET's, SD not SE). None if not an amino acid (``normalize_resname``)."""
    standard = normalize_resname(name)
    if standard is None:
        return None
    name = name.strip().upper()
    if name not in RESTYPE_INDEX and name not in RESIDUE_ALIASES:
        name = name[1:]  # Amber N/C-terminal 4-letter name
    return "MET" if name == "MSE" else name


def normalize_atomname(resname: str, atom: str) -> str:
    """Standard PDB name of a heavy atom of a (normalised) residue."""
    atom = atom.strip().upper()
    atom = ATOM_ALIASES.get(atom, atom)
    return RESIDUE_ATOM_ALIASES.get(resname, {}).get(atom, atom)


def is_hydrogen(atom: str, element: str | None = None) -> bool:
    """True for hydrogens and deuterium (by element when known, otherwise by name)."""
    if element:
        return element.strip().upper() in ("H", "D")
    atom = atom.strip().upper().lstrip("0123456789")
    return atom.startswith("H") or atom.startswith("D") and not atom.startswith("DUM")
