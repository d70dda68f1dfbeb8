"""Residue and atom name normalisation: force-field spellings map to the PDB standard, idempotently."""
from __future__ import annotations

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from latcpb.data.names import is_hydrogen, normalize_atomname, normalize_resname
from latcpb.geometry.residue_constants import RESTYPES

# Spellings used by CHARMM, Amber, GROMACS and the PDB, with the standard residue each one stands for.
VARIANTS = {
    "HSD": "HIS", "HSE": "HIS", "HSP": "HIS", "HID": "HIS", "HIE": "HIS", "HIP": "HIS", "HISD": "HIS",
    "HISE": "HIS", "HISH": "HIS", "CYX": "CYS", "CYM": "CYS", "ASH": "ASP", "GLH": "GLU", "LYN": "LYS",
    "MSE": "MET", "NALA": "ALA", "CLYS": "LYS", "NMET": "MET", "CTRP": "TRP", "NGLY": "GLY", "CPRO": "PRO",
    "NHIE": "HIS", "CHID": "HIS", "CCYX": "CYS", "NCYX": "CYS", "CHIP": "HIS",
}
NOT_AMINO_ACIDS = ["HOH", "SOL", "WAT", "TIP3", "NA", "CL", "SOD", "CLA", "ACE", "NME", "NMA", "NH2", "DA", "DG",
                   "DT", "U", "HEM", "ATP", "LIG", "UNK", "GOL", "", "   ", "XALA", "ALAX", "NXYZ", "CAL"]
_case = st.sampled_from([str.upper, str.lower, str.title])
_pad = st.sampled_from(["", " ", "  "])


@given(st.sampled_from(sorted(VARIANTS) + RESTYPES), _case, _pad, _pad)
def test_variants_map_to_standard(name, case, left, right):
    expected = VARIANTS.get(name, name)
    assert normalize_resname(left + case(name) + right) == expected


@given(st.sampled_from(sorted(VARIANTS) + RESTYPES + NOT_AMINO_ACIDS))
def test_normalising_twice_is_idempotent(name):
    once = normalize_resname(name)
    assert once is None or (once in RESTYPES and normalize_resname(once) == once)


@pytest.mark.parametrize("name", NOT_AMINO_ACIDS)
def test_unknown_names_give_none(name):
    assert normalize_resname(name) is None


@settings(max_examples=200)
@given(st.text(alphabet="0123456789+-*_#@!?.", max_size=6))
def test_names_without_letters_give_none(name):
    assert normalize_resname(name) is None


@settings(max_examples=200)
@given(st.text(alphabet="ABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789 ", max_size=5))
def test_any_result_is_standard(name):
    out = normalize_resname(name)
    assert out is None or out in RESTYPES


@pytest.mark.parametrize("resname,atom,expected", [
    ("ALA", "OT1", "O"), ("ALA", "OT2", "OXT"), ("LYS", "OC1", "O"), ("LYS", "OC2", "OXT"), ("ILE", "CD", "CD1"),
    ("ILE", "CD1", "CD1"), ("MET", "SE", "SD"), ("LEU", " CD1", "CD1"), ("GLY", "ca", "CA"), ("SER", "OG", "OG"),
])
def test_atom_names(resname, atom, expected):
    assert normalize_atomname(resname, atom) == expected
    assert normalize_atomname(resname, normalize_atomname(resname, atom)) == expected


@pytest.mark.parametrize("atom,element,expected", [
    ("H", None, True), ("HN", None, True), ("1HB", None, True), ("HD21", None, True), ("D", None, True),
    ("CA", None, False), ("N", None, False), ("OD1", None, False), ("ND2", None, False), ("SG", None, False),
    ("HG", "H", True), ("HG", "HG", False), ("CA", "C", False), ("DUM", None, False),
])
def test_hydrogens(atom, element, expected):
    assert is_hydrogen(atom, element) is expected
