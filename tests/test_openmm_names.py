"""Protonation and disulfide names through the OpenMM stage: CHARMM (HSD/HSE, disulfide as CONECT) and Amber
(HID/HIE/CYX) inputs relax and simulate with the protonation their names say, the disulfide bonded, and the output
keeps the input's residue names.

Data (tests/data/openmm/): T0892_2chains_charmm.pdb and T0892_2chains_amber.pdb are residues 111-132 (chain/segment
A, with the disulfide CYS 111 - CYS 123 and HIS 131) and 42-47 (chain/segment B, HIS 44) of
/work/shared/data/val/T0892.pdb, renamed: CHARMM segments PROA/PROB, no chain ID, HSD 44, HSE 131, ILE CD, SG-SG
CONECT; Amber chains A/B, HID 44, HIE 131, CYX 111/123, no CONECT.
"""
import os
import warnings

import numpy as np
import pytest

mda = pytest.importorskip("MDAnalysis")
mm = pytest.importorskip("openmm")
import openmm.unit as unit  # noqa: E402

from latcpb.errors import LatcpbInputError  # noqa: E402
from latcpb_openmm import heavy_structure, make_simulation, relax_universe  # noqa: E402
from latcpb_openmm.convert import disulfide_pairs  # noqa: E402
from latcpb_openmm.forcefields import variant_of_name  # noqa: E402

DATA = os.path.join(os.path.dirname(__file__), "data", "openmm")
CHARMM = os.path.join(DATA, "T0892_2chains_charmm.pdb")
AMBER = os.path.join(DATA, "T0892_2chains_amber.pdb")
# (resid of the delta-protonated HIS, resid of the epsilon-protonated HIS, the two disulfide cysteines)
HID, HIE, SS = 44, 131, (111, 123)


def universe(path):
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        return mda.Universe(path)


def his_hydrogens(names_of_resid):
    return {rid: {n for n in names_of_resid(rid) if n in ("HD1", "HE2")} for rid in (HID, HIE)}


def test_names_map_to_modeller_variants():
    assert [variant_of_name(n) for n in ("HSD", "HSE", "HSP", "HID", "HIE", "HIP", "CYX", "ASH", "GLH", "LYN")] == \
        ["HID", "HIE", "HIP", "HID", "HIE", "HIP", "CYX", "ASH", "GLH", "LYN"]
    assert [variant_of_name(n) for n in ("HIS", "CYS", "ASP", "NHIE", "CCYX", "HISD", "HISH")] == \
        [None, None, None, "HIE", "CYX", "HID", "HIP"]


@pytest.mark.parametrize("path,names", [(CHARMM, {HID: "HSD", HIE: "HSE", SS[0]: "CYS"}),
                                        (AMBER, {HID: "HID", HIE: "HIE", SS[0]: "CYX"})])
def test_protonation_names_relax_and_simulate(path, names):
    u = universe(path)
    hs = heavy_structure(u.atoms)
    assert hs.topology.getNumChains() == 2  # segments PROA/PROB (one chain ID) or chains A/B
    resid_of = [int(r.id) for r in hs.topology.residues()]
    assert [(resid_of[a], resid_of[b]) for a, b in disulfide_pairs(hs.topology)] == [SS]
    out, reports = relax_universe(u, hydrogens=True, progress=False, max_iterations=200)
    assert reports[0].status == "ok", reports[0].reason
    # the output keeps the input's residue names
    for rid, name in names.items():
        assert set(out.select_atoms(f"resid {rid}").resnames) == {name}
    # the protonation the names say: HSD/HID -> HD1 only, HSE/HIE -> HE2 only; disulfide cysteines have no HG
    assert his_hydrogens(lambda rid: set(out.select_atoms(f"resid {rid}").names)) == {HID: {"HD1"}, HIE: {"HE2"}}
    assert not {"HG"} & set(out.select_atoms(f"resid {SS[0]} {SS[1]}").names)
    sg = out.select_atoms("name SG")
    bonded = {tuple(sorted(b.atoms.resids)) for b in out.bonds if set(b.atoms.names) == {"SG"}}
    assert bonded == {SS} and 1.9 < np.linalg.norm(sg.positions[0] - sg.positions[1]) < 2.2
    assert out.segments.n_segments == 2 and len(set(out.atoms.chainIDs)) >= 1
    # a few steps of MD with that protonation and the disulfide
    sim = make_simulation(out, solvent="vacuum", seed=2, integrator=mm.VerletIntegrator(0.0005))
    top = sim.topology
    by_resid = {}
    for atom in top.atoms():
        by_resid.setdefault(int(atom.residue.id), set()).add(atom.name)
    assert his_hydrogens(lambda rid: by_resid[rid]) == {HID: {"HD1"}, HIE: {"HE2"}}
    assert len(disulfide_pairs(top)) == 1
    assert top.getNumChains() == 2
    sim.step(20)
    state = sim.context.getState(getEnergy=True, getPositions=True)
    assert np.isfinite(state.getPotentialEnergy().value_in_unit(unit.kilojoule_per_mole))
    xyz = state.getPositions(asNumpy=True).value_in_unit(unit.angstrom)
    sg_index = [a.index for a in top.atoms() if a.name == "SG"]
    assert np.linalg.norm(xyz[sg_index[0]] - xyz[sg_index[1]]) < 2.3  # still bonded


def test_declared_disulfide_bonds_far_apart_sg():
    """A disulfide the input declares (CONECT) is bonded whatever the SG distance; the minimiser closes it."""
    u = universe(CHARMM)
    sg = u.select_atoms("name SG")
    shift = sg.positions[1] - sg.positions[0]
    u.atoms[[sg.indices[1]]].positions = sg.positions[1] + 1.5 * shift / np.linalg.norm(shift)  # SG-SG 3.5 Å
    assert np.linalg.norm(np.diff(u.select_atoms("name SG").positions, axis=0)) > 3.4
    hs = heavy_structure(u.atoms)
    assert len(disulfide_pairs(hs.topology)) == 1
    u.delete_bonds(u.bonds)  # without the CONECT record two CYS 3.5 Å apart are free cysteines
    assert disulfide_pairs(heavy_structure(u.atoms).topology) == []
    u = universe(CHARMM)
    u.atoms[[sg.indices[1]]].positions = sg.positions[1] + 1.5 * shift / np.linalg.norm(shift)
    out, reports = relax_universe(u, progress=False, max_iterations=300)
    assert reports[0].status == "ok", reports[0].reason
    d = np.linalg.norm(np.diff(out.select_atoms("name SG").positions, axis=0))
    assert d < 2.3


def test_histidine_option_and_bad_value():
    u = universe(AMBER)
    out, _ = relax_universe(u, hydrogens=True, progress=False, max_iterations=20, histidine="HIP")
    assert his_hydrogens(lambda rid: set(out.select_atoms(f"resid {rid}").names)) == {HID: {"HD1", "HE2"},
                                                                                    HIE: {"HD1", "HE2"}}
    with pytest.raises(LatcpbInputError, match="histidine"):
        heavy_structure(u.atoms, histidine="HSD")


def test_cli_relax_keeps_charmm_names_and_disulfide(tmp_path):
    """latcpb-backmap --relax --hydrogens on the CHARMM-named CA trace (HSD/HSE, the disulfide declared as a
    CYS-CYS CONECT between beads): the output keeps HSD/HSE with their protonation and bonds the disulfide."""
    from click.testing import CliRunner

    from latcpb.cli.backmap import main

    u = universe(CHARMM)
    ca = mda.Merge(u.select_atoms("name CA"))
    cys = ca.select_atoms("resname CYS").indices
    ca.add_TopologyAttr("bonds", [tuple(cys)])
    cg = str(tmp_path / "cg.pdb")
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        ca.atoms.write(cg)
    out = str(tmp_path / "aa.pdb")
    result = CliRunner().invoke(main, [cg, "-o", out, "--relax", "--hydrogens", "--model", "geometric", "--quiet"])
    assert result.exit_code == 0, result.output
    aa = universe(out)
    assert set(aa.select_atoms(f"resid {HID}").resnames) == {"HSD"}
    assert set(aa.select_atoms(f"resid {HIE}").resnames) == {"HSE"}
    assert his_hydrogens(lambda rid: set(aa.select_atoms(f"resid {rid}").names)) == {HID: {"HD1"}, HIE: {"HE2"}}
    bonded = {tuple(sorted(b.atoms.resids)) for b in aa.bonds if set(b.atoms.names) == {"SG"}}
    assert bonded == {SS}
    sg = aa.select_atoms("name SG").positions
    assert np.linalg.norm(sg[0] - sg[1]) < 2.3
    assert aa.segments.n_segments == 2


def test_other_protonation_names():
    """ASH, GLH and HSP give the hydrogens they name (HD2, HE2, HD1 + HE2) and keep their names; a neutral LYN at a
    chain end, which amber14 has no terminal template for, is refused naming it."""
    u = universe(CHARMM)
    inner = {"ASP": "ASH", "GLU": "GLH", "HSE": "HSP"}
    u.residues.resnames = [inner.get(r.resname, r.resname) if r.resid >= 111 else r.resname for r in u.residues]
    out, reports = relax_universe(u, hydrogens=True, progress=False, max_iterations=50)
    assert reports[0].status == "ok", reports[0].reason
    for name, expected in (("ASH", {"HD2"}), ("GLH", {"HE2"}), ("HSP", {"HD1", "HE2"})):
        residues = out.select_atoms(f"resname {name}").residues
        assert len(residues) > 0
        for r in residues:
            assert expected <= set(r.atoms.names), (name, r.resid)
    glu = out.select_atoms("resname GLU and resid 47")
    assert len(glu) > 0 and "HE2" not in glu.names  # chain B's GLU keeps its name and charge (pH 7)
    u.residues[u.residues.resids == 42].resnames = "LYN"  # N-terminal residue of chain B
    with pytest.raises(LatcpbInputError, match="LYN 42.*terminal template"):
        relax_universe(u, progress=False, max_iterations=5)
