"""The OpenMM side follows the one chain rule and keeps time and box: chains split exactly where (segid, chainID)
changes or the Universe's bonds say so (never by distance), Topologies carry the box, relaxed frames keep their
times and boxes.

Data: tests/data/mini/CLN025.pdb and T0922.pdb (copies of /work/shared/data/val, see tests/data/README.md).
"""
import os
import warnings

import numpy as np
import pytest

mda = pytest.importorskip("MDAnalysis")
pytest.importorskip("openmm")
import openmm.unit as unit  # noqa: E402

import latcpb  # noqa: E402
from latcpb.io.universe_builder import TimedMemoryReader  # noqa: E402
from latcpb_openmm import Relaxer, heavy_structure, relax_universe, to_openmm  # noqa: E402
from latcpb_openmm.convert import box_vectors, dimensions_of  # noqa: E402

MINI = os.path.join(os.path.dirname(__file__), "data", "mini")
CLN025 = os.path.join(MINI, "CLN025.pdb")
T0922 = os.path.join(MINI, "T0922.pdb")
BOX = np.array([60.0, 70.0, 80.0, 90.0, 90.0, 90.0], dtype=np.float32)


def universe(path):
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        return mda.Universe(path)


def peptide_bonds(top):
    """[(residue index, residue index)] of C-N bonds between residues of an OpenMM topology."""
    return [(a.residue.index, b.residue.index) for a, b in top.bonds()
            if {a.name, b.name} == {"C", "N"} and a.residue.index != b.residue.index]


def test_chains_split_by_ids_and_bonds_never_by_distance():
    u = universe(CLN025)
    x = u.atoms.positions.copy()
    later = u.atoms.resids > 5
    x[later] += np.array([6.0, 0.0, 0.0])  # residues 6-10 moved 6 Å away: CA 5-6 far beyond any CG bead spacing
    u.atoms.positions = x
    top = heavy_structure(u.atoms).topology
    assert top.getNumChains() == 1 and len(peptide_bonds(top)) == 9  # same IDs, no bonds: one chain, no distance rule
    u.add_TopologyAttr("segids", ["A"])
    u.residues[5:].atoms.chainIDs = "B"
    top = heavy_structure(u.atoms).topology
    assert top.getNumChains() == 2 and (4, 5) not in peptide_bonds(top) and len(peptide_bonds(top)) == 8
    # bonds of the Universe: C-N of every pair but 7-8 -> a break there
    u = universe(CLN025)
    c, n = u.select_atoms("name C"), u.select_atoms("name N")
    u.add_TopologyAttr("bonds", [(c[k].index, n[k + 1].index) for k in range(9) if k != 6])
    top = heavy_structure(u.atoms).topology
    assert top.getNumChains() == 2 and (6, 7) not in peptide_bonds(top)
    assert [len(list(ch.residues())) for ch in top.chains()] == [7, 3]


def test_backmapped_break_is_two_chains_with_termini_and_relaxes():
    """Residues 40-42 left out of the CG beads: the core marks the gap (own chain ID and segment); the OpenMM
    topology has two chains, each with its own C terminus, and no bond across the gap."""
    aa = latcpb.backmap_universe(universe(T0922), select="name CA and not resid 40:42", model="geometric")
    hs = heavy_structure(aa.atoms)
    top = hs.topology
    assert top.getNumChains() == 2
    ends = [list(ch.residues())[-1] for ch in top.chains()]
    assert all("OXT" in [a.name for a in r.atoms()] for r in ends)
    resids = [int(r.id) for r in top.residues()]
    assert all({resids[a], resids[b]} != {39, 43} for a, b in peptide_bonds(top))
    out, reports = relax_universe(aa, progress=False)
    assert reports[0].status == "ok" and reports[0].ca_drift_rms < 0.1 and reports[0].peptide_breaks_after == 0
    assert len(out.atoms) == len(aa.atoms)


def test_topology_carries_the_box():
    assert heavy_structure(universe(T0922).atoms).topology.getPeriodicBoxVectors() is None  # CRYST1 1 1 1
    u = universe(CLN025)
    u.dimensions = BOX
    top, _ = to_openmm(u.atoms, solvent="vacuum")
    vectors = top.getPeriodicBoxVectors().value_in_unit(unit.nanometer)
    np.testing.assert_allclose([vectors[0][0], vectors[1][1], vectors[2][2]], BOX[:3] / 10.0, rtol=1e-6)
    triclinic = np.array([50.0, 55.0, 60.0, 70.0, 80.0, 95.0])
    np.testing.assert_allclose(dimensions_of(box_vectors(triclinic)), triclinic, rtol=1e-5)
    assert box_vectors([1, 1, 1, 90, 90, 90]) is None and dimensions_of(None) is None


@pytest.mark.parametrize("hydrogens", [False, True])
def test_relaxed_frames_keep_times_steps_and_boxes(hydrogens):
    u = universe(CLN025)
    x = u.atoms.positions.copy()
    frames = np.stack([x, x + 0.05, x - 0.05]).astype(np.float32)
    boxes = np.stack([BOX, BOX * [1.01, 1.01, 1.01, 1, 1, 1], BOX * [0.99, 1, 1, 1, 1, 1]]).astype(np.float32)
    times = np.array([1000.0, 1010.0, 1030.0])
    u.trajectory = TimedMemoryReader(frames, order="fac", times=times, steps=[500000, 505000, 515000],
                                     dimensions=boxes, dt=10.0)
    out, reports = relax_universe(u, hydrogens=hydrogens, progress=False, max_iterations=50)
    assert [r.status for r in reports] == ["ok"] * 3
    assert [r.time for r in reports] == list(times)
    got = [(ts.time, ts.data.get("step"), ts.dimensions.copy()) for ts in out.trajectory]
    np.testing.assert_allclose([g[0] for g in got], times)
    assert [g[1] for g in got] == [500000, 505000, 515000]
    np.testing.assert_allclose(np.stack([g[2] for g in got]), boxes, rtol=1e-6)
    # batches of one trajectory through one Relaxer (the CLI's path) keep them too
    relaxer = Relaxer(u.atoms, max_iterations=20)
    first, _ = relaxer.relax_universe(u, progress=False, stop=2)
    second, r2 = relaxer.relax_universe(u, progress=False, start=2, frame_offset=0)
    assert [ts.time for ts in first.trajectory] == [1000.0, 1010.0] and second.trajectory[0].time == 1030.0
    assert r2[0].frame == 2
