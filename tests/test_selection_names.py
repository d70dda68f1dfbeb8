"""Bead selection and residue names: protein beads only (ions, water, lipids left out with a one-line note),
unknown residues refused or skipped, non-CA beads (Martini BB) refused unless --beads-as-ca, protonation and
disulfide names kept in the output, and the disulfides the input declares written as SG-SG bonds and CONECT.

Fixtures: tests/data/cg (made by tests/data/cg/make_fixtures.py from the small validation set)."""
from __future__ import annotations

from pathlib import Path

import MDAnalysis as mda
import pytest
from click.testing import CliRunner

import latcpb
from conftest import quiet_universe
from latcpb.cli.backmap import main
from latcpb.data.featurize import map_allatom
from latcpb.data.names import normalize_resname, output_resname
from latcpb.errors import LatcpbInputError
from latcpb.metrics.matching import match_systems

CG = Path(__file__).resolve().parent / "data" / "cg"
PROG = "latcpb-backmap: "


def run_cli(args, expect_exit=0):
    result = CliRunner().invoke(main, [*map(str, args), "--quiet", "--model", "geometric"])
    assert result.exit_code == expect_exit, (result.exit_code, result.stderr, result.exception)
    return result


def stderr_lines(result):
    return [line for line in result.stderr.splitlines() if line.strip()]


def test_non_protein_beads_left_out_with_a_note(tmp_path):
    """3 Ca2+ ions named CA, 4 water beads and a lipid: left out, one note with their count."""
    out = tmp_path / "aa.pdb"
    result = run_cli([CG / "mixed_beads.pdb", "-o", out])
    notes = [line for line in stderr_lines(result) if line.startswith(PROG + "note:")]
    assert len(notes) == 1, result.stderr
    assert "left out 15 non-protein atoms/beads in 8 residues" in notes[0] and "CA x3" in notes[0], notes[0]
    aa = quiet_universe(out)
    assert len(aa.residues) == 20 and "CA" not in set(aa.residues.resnames)


def _trp_cg(edit):
    cg = mda.Merge(quiet_universe(CG / "trp_box.pdb").atoms)
    edit(cg)
    return cg


def test_unknown_residue_refused_or_skipped(tmp_path):
    def rename(cg):
        names = list(cg.residues.resnames)
        names[9] = "XYZ"
        cg.residues.resnames = names
    cg = _trp_cg(rename)
    with pytest.raises(LatcpbInputError, match=r"unknown residue names inside a protein chain.*XYZ 10.*--skip-unknown"):
        latcpb.backmap_universe(cg, model="geometric")
    notes = []
    bm = latcpb.Backmapper(model="geometric", skip_unknown=True, note=notes.append)
    aa = bm.backmap_universe(cg)
    assert len(aa.residues) == 19 and 10 not in set(aa.residues.resids)
    assert len({(s.segid, c) for s, c in zip(aa.atoms.segments, aa.atoms.chainIDs)}) == 2  # a break where it was
    assert any("XYZ 10" in n for n in notes)
    top = tmp_path / "cg.pdb"
    cg.atoms.write(str(top))
    result = run_cli([top, "-o", tmp_path / "aa.pdb"], expect_exit=2)
    assert "XYZ 10" in stderr_lines(result)[-1]


def test_martini_beads_refused_unless_asked(tmp_path):
    result = run_cli([CG / "martini_bb.pdb", "-o", tmp_path / "aa.pdb"], expect_exit=2)
    line = stderr_lines(result)[-1]
    assert "BB" in line and "--beads-as-ca" in line, line
    result = run_cli([CG / "martini_bb.pdb", "-o", tmp_path / "aa.pdb", "--select", "name BB"], expect_exit=2)
    line = stderr_lines(result)[-1]
    assert "named BB x20" in line and "not C-alpha" in line and "--beads-as-ca" in line, line
    assert not (tmp_path / "aa.pdb").exists()
    run_cli([CG / "martini_bb.pdb", "-o", tmp_path / "aa.pdb", "--select", "name BB", "--beads-as-ca"])
    assert len(quiet_universe(tmp_path / "aa.pdb").residues) == 20


VARIANTS = {0: "NASP", 1: "ASH", 2: "HSD", 3: "HSE", 4: "HSP", 5: "HID", 6: "HIE", 7: "HIP", 8: "LYN",
            9: "GLH", 10: "CYX", 11: "MSE", 19: "CSER"}


def test_protonation_names_round_trip(tmp_path):
    """CHARMM and Amber names come back as they went in (N/C-terminal 4-letter prefixes dropped, MSE as MET with
    MET's atoms); metrics and featurisation read the output through ``normalize_resname``."""
    def rename(cg):
        names = list(cg.residues.resnames)
        for i, name in VARIANTS.items():
            names[i] = name
        cg.residues.resnames = names
    cg = _trp_cg(rename)
    expected = [output_resname(r) for r in cg.residues.resnames]
    assert expected[0] == "ASP" and expected[11] == "MET" and expected[19] == "SER" and expected[2] == "HSD"
    top = tmp_path / "cg.pdb"
    cg.atoms.write(str(top))
    out = tmp_path / "aa.pdb"
    run_cli([top, "-o", out])
    aa = quiet_universe(out)
    assert list(aa.residues.resnames) == expected
    assert set(aa.select_atoms("resname HSD HSE HSP HID HIE HIP").names) >= {"ND1", "NE2", "CE1"}
    assert set(aa.select_atoms("resname MET").names) >= {"SD", "CE"}
    # downstream code sees standard residues
    mapping = map_allatom(aa.atoms, source=str(out))
    assert list(mapping.topology.resnames) == [normalize_resname(r) for r in expected]
    matched = match_systems(aa.atoms, aa.atoms)
    assert len(matched.resnames) == 20 and matched.mask.sum() == len(aa.atoms)


@pytest.mark.parametrize("fixture", ["t0892_cyx.pdb", "t0892_ssbond.pdb"])
def test_declared_disulfide_becomes_sg_bond_and_conect(tmp_path, fixture):
    """CYS 111 / CYS 123 of T0892, declared by CYX names or by a CONECT bond between the beads: one SG-SG bond in
    the all-atom Universe, a CONECT pair in the PDB, and OpenMM reads the bond."""
    cg = quiet_universe(CG / fixture)
    aa = latcpb.backmap_universe(cg, model="geometric")
    assert len(aa.bonds) == 1
    a, b = aa.bonds[0].atoms
    assert {a.name, b.name} == {"SG"} and {a.resid, b.resid} == {111, 123}
    out = tmp_path / "aa.pdb"
    run_cli([CG / fixture, "-o", out])
    lines = out.read_text().splitlines()
    serial = {int(line[6:11]): (line[12:16].strip(), int(line[22:26])) for line in lines
              if line.startswith("ATOM")}
    conect = [[int(line[i:i + 5]) for i in range(6, len(line), 5)] for line in lines if line.startswith("CONECT")]
    assert sorted(tuple(sorted(serial[s] for s in c)) for c in conect) == [(("SG", 111), ("SG", 123))] * 2
    app = pytest.importorskip("openmm.app")
    top = app.PDBFile(str(out)).topology
    ss = [(x.residue.id, y.residue.id) for x, y in top.bonds() if x.name == "SG" and y.name == "SG"]
    assert sorted(map(sorted, ss)) == [["111", "123"]]
    if fixture == "t0892_cyx.pdb":
        assert set(aa.select_atoms("resid 111 123").residues.resnames) == {"CYX"}


def test_no_disulfide_without_declaration():
    """Plain CYS beads 5.5 Å apart declare nothing: no bond is made up from distance alone."""
    cg = quiet_universe(CG / "t0892_cyx.pdb")
    names = list(cg.residues.resnames)
    cg.residues.resnames = ["CYS" if n == "CYX" else n for n in names]
    aa = latcpb.backmap_universe(cg, model="geometric")
    assert len(aa.bonds) == 0
