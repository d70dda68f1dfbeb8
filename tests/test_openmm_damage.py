"""The OpenMM stage never crashes and never hides damage: degenerate input (straight CA traces as in CG start
structures, atoms on top of each other) is handled or refused with a clear error, and each relaxed frame is checked
again for D residues, new cis peptides and broken bonds.

Data: tests/data/mini/CLN025.pdb and T0922.pdb (copies of /work/shared/data/val, see tests/data/README.md).
"""
import json
import os
import warnings

import numpy as np
import pytest

mda = pytest.importorskip("MDAnalysis")
pytest.importorskip("openmm")
from MDAnalysis.coordinates.memory import MemoryReader  # noqa: E402

import latcpb  # noqa: E402
from latcpb.errors import LatcpbInputError  # noqa: E402
from latcpb_openmm import heavy_structure, make_simulation, relax_universe, write_report  # noqa: E402
from latcpb_openmm.hydrogens import add_hydrogens  # noqa: E402

MINI = os.path.join(os.path.dirname(__file__), "data", "mini")
CLN025 = os.path.join(MINI, "CLN025.pdb")
T0922 = os.path.join(MINI, "T0922.pdb")


def universe(path):
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        return mda.Universe(path)


def with_frames(path, frames):
    u = universe(path)
    u.load_new(np.stack(frames).astype(np.float32), format=MemoryReader)
    return u


@pytest.fixture(scope="module")
def straight_backmap():
    """CLN025's sequence on a straight CA line (3.8 Å steps), backmapped: Modeller used to divide by zero on it."""
    ca = mda.Merge(universe(CLN025).select_atoms("name CA"))
    ca.atoms.positions = np.c_[np.arange(10) * 3.8, np.zeros(10), np.zeros(10)]
    return latcpb.backmap_universe(ca, model="geometric")


def test_straight_trace_relaxes_and_simulates(straight_backmap):
    out, reports = relax_universe(straight_backmap, hydrogens=True, progress=False)
    r = reports[0]
    assert r.status in ("ok", "damaged") and r.energy_after < r.energy_before and r.ca_drift_rms < 0.2
    assert len(out.select_atoms("element H")) > 50
    sim = make_simulation(straight_backmap, solvent="vacuum", seed=1)
    sim.minimizeEnergy(maxIterations=50)
    assert sim.topology.getNumAtoms() > len(straight_backmap.atoms)


def test_coincident_bonded_atoms_refused_naming_the_residue_or_frame():
    u = universe(CLN025)
    x = u.atoms.positions.copy()
    bad = x.copy()
    ca = u.select_atoms("resid 4 and name CA").indices[0]
    cb = u.select_atoms("resid 4 and name CB").indices[0]
    bad[cb] = bad[ca]
    hs = heavy_structure(u.atoms)
    with pytest.raises(LatcpbInputError, match=r"on top of each other.*(CA-CB|CB-CA) of ASP 3|GLU|PRO 4"):
        add_hydrogens(hs, hs.positions(bad))
    # as the first frame of a trajectory: that frame fails with the reason, the next one sets up and relaxes
    out, reports = relax_universe(with_frames(CLN025, [bad, x]), progress=False)
    assert [r.status for r in reports] == ["failed", "ok"]
    assert "frame 0" in reports[0].reason and "on top of each other" in reports[0].reason
    out.trajectory[0]
    np.testing.assert_array_equal(out.atoms.positions, bad)  # returned as it came


def mirrored(x, u, resid):
    """Positions with residue ``resid``'s side chain reflected through its N-CA-C plane (a D residue)."""
    res = u.select_atoms(f"resid {resid}")
    p = {a.name: x[a.index] for a in res}
    normal = np.cross(p["N"] - p["CA"], p["C"] - p["CA"])
    normal /= np.linalg.norm(normal)
    out = x.copy()
    for a in res:
        if a.name not in ("N", "CA", "C", "O"):
            v = x[a.index] - p["CA"]
            out[a.index] = x[a.index] - 2 * np.dot(v, normal) * normal
    return out


def test_d_residue_and_broken_bond_mark_the_frame():
    u = universe(T0922)
    x = u.atoms.positions.astype(np.float64)
    d_frame = mirrored(x, u, 30)
    broken = x.copy()
    broken[u.atoms.resids >= 50] += np.array([4.0, 0.0, 0.0])  # an undeclared break: CA restraints keep it open
    frames = with_frames(T0922, [x, d_frame, broken])
    _, reports = relax_universe(frames, progress=False, chirality_k=0, max_iterations=20)
    assert reports[0].status == "ok" and reports[0].d_residues_after == 0
    d = reports[1]
    assert d.d_residues_before == 1 and d.d_residues_after == 1 and d.status == "damaged"
    label = u.select_atoms("resid 30").residues[0].resname + " 30"
    assert label in d.reason and "D residue" in d.reason
    b = reports[2]
    assert b.peptide_breaks_before == 1 and b.status == "damaged" and b.broken_bonds
    assert "50" in b.broken_bonds and "broken bond" in b.reason and b.peptide_breaks_after == 1
    # the chirality guard (default) turns the mirrored residue back to L
    _, fixed = relax_universe(with_frames(T0922, [x, d_frame]), progress=False)
    assert [r.status for r in fixed] == ["ok", "ok"]
    assert fixed[1].d_residues_before == 1 and fixed[1].d_residues_after == 0


def test_report_summary_shows_damage(tmp_path):
    u = universe(T0922)
    x = u.atoms.positions.astype(np.float64)
    _, reports = relax_universe(with_frames(T0922, [x, mirrored(x, u, 30)]), progress=False, chirality_k=0,
                                max_iterations=20)
    data = json.loads(open(write_report(reports, tmp_path / "r.json")).read())
    assert data["summary"]["failed"] == 1 and data["summary"]["damaged"] == 1 and data["summary"]["ok"] == 1
    assert data["summary"]["frames_with_d_residues_after"] == 1
    assert data["frames"][1]["status"] == "damaged" and not (tmp_path / "r.json.partial").exists()
    # the CLI and the pipeline print this one line on stderr (latcpb-backmap --relax)
    from latcpb.pipeline.relax_stage import relax_note

    line = relax_note(reports, "r.json")
    assert line.startswith("relaxation: 1 of 2 frames damaged by relaxation (first: output frame 1: ")
    assert "D residue" in line and line.endswith("; see r.json")
    assert relax_note([r for r in reports if r.status == "ok"], "r.json") is None
