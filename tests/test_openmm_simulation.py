"""make_simulation and BackmapReporter on real OpenMM systems.

Data: tests/data/mini/CLN025.pdb and T0922.pdb, copies of /work/shared/data/val/CLN025.pdb (chignolin) and
/work/shared/data/val/T0922.pdb (CASP target T0922, 74 residues).
"""
import os
import sys
import warnings

import numpy as np
import pytest

mda = pytest.importorskip("MDAnalysis")
mm = pytest.importorskip("openmm")
import openmm.app as app  # noqa: E402
import openmm.unit as unit  # noqa: E402

import latcpb  # noqa: E402
from latcpb.errors import LatcpbInputError  # noqa: E402
from latcpb_openmm import BackmapReporter, make_simulation, relax_universe  # noqa: E402

DATA = os.path.join(os.path.dirname(__file__), "data", "openmm")
MINI = os.path.join(os.path.dirname(__file__), "data", "mini")
CLN025 = os.path.join(MINI, "CLN025.pdb")
T0922 = os.path.join(MINI, "T0922.pdb")
sys.path.insert(0, os.path.join(os.path.dirname(__file__), "..", "examples"))
from cg_simulation_reporter import build_ca_model  # noqa: E402


def universe(path):
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        return mda.Universe(path)


def energy(sim):
    return sim.context.getState(getEnergy=True).getPotentialEnergy().value_in_unit(unit.kilojoule_per_mole)


def test_make_simulation_from_relaxed_universe_runs():
    relaxed, reports = relax_universe(universe(CLN025), hydrogens=True, progress=False)
    assert reports[0].status == "ok"
    sim = make_simulation(relaxed, solvent="obc", seed=3)
    assert isinstance(sim, app.Simulation)
    assert sim.topology.getNumAtoms() == len(relaxed.atoms)  # hydrogens taken as they are
    forces = [type(f).__name__ for f in sim.system.getForces()]
    assert "CustomGBForce" in forces  # amber14 implicit/obc2
    e0 = energy(sim)
    sim.step(200)
    state = sim.context.getState(getEnergy=True, getPositions=True)
    e1 = state.getPotentialEnergy().value_in_unit(unit.kilojoule_per_mole)
    xyz = state.getPositions(asNumpy=True).value_in_unit(unit.angstrom)
    assert np.isfinite([e0, e1]).all() and abs(e1 - e0) < 2000.0
    ke = state.getKineticEnergy()
    assert 0 < ke.value_in_unit(unit.kilojoule_per_mole) < 5000.0
    assert np.isfinite(xyz).all() and np.ptp(xyz, axis=0).max() < 40.0  # still a 10-residue hairpin


def test_make_simulation_from_heavy_atom_path_adds_hydrogens():
    sim = make_simulation(CLN025, solvent="vacuum", seed=1, integrator=mm.VerletIntegrator(0.0005))
    n_h = sum(1 for a in sim.topology.atoms() if a.element.symbol == "H")
    assert n_h > 50 and sim.topology.getNumAtoms() == len(universe(CLN025).atoms) + n_h
    sim.minimizeEnergy(maxIterations=100)
    sim.step(50)
    assert np.isfinite(energy(sim))
    with pytest.raises(LatcpbInputError, match="no 'obc'"):
        make_simulation(CLN025, forcefield="charmm36", solvent="obc")


def test_make_simulation_seed_fixes_the_run_and_zero_is_refused():
    """A non-zero seed gives the same velocities and Langevin noise (the same positions after 20 steps on the CPU
    platform, up to the summation order of its threads); OpenMM reads seed 0 as "draw one", so make_simulation
    refuses it with a one-line error."""
    def positions(seed):
        sim = make_simulation(CLN025, solvent="vacuum", seed=seed, platform="CPU")
        sim.step(20)
        return sim.context.getState(getPositions=True).getPositions(asNumpy=True).value_in_unit(unit.angstrom)

    first, again, other = positions(7), positions(7), positions(8)
    assert np.abs(first - again).max() < 1e-4
    assert np.abs(first - other).max() > 1e-2
    with pytest.raises(LatcpbInputError, match="seed 0"):
        make_simulation(CLN025, solvent="vacuum", seed=0)


def ca_simulation(steps_per_ps=100):
    ca = universe(T0922).select_atoms("name CA")
    top, system = build_ca_model(ca.positions.astype(float) * 0.1, ca.resnames, ca.resids)
    integrator = mm.LangevinMiddleIntegrator(300 * unit.kelvin, 10 / unit.picosecond, 10 * unit.femtosecond)
    integrator.setRandomNumberSeed(5)
    sim = app.Simulation(top, system, integrator, mm.Platform.getPlatformByName("CPU"))
    sim.context.setPositions(ca.positions.astype(float) * 0.1 * unit.nanometer)
    return sim, ca


def test_backmap_reporter_writes_frames(tmp_path):
    sim, ca = ca_simulation()
    backmapper = latcpb.Backmapper(model="geometric", seed=0, keep_beads=True)
    out = tmp_path / "aa.xtc"
    with BackmapReporter(out, 25, backmapper=backmapper) as reporter:
        assert reporter.describeNextReport(sim)["steps"] == 25
        assert reporter.describeNextReport(sim)["include"] == ["positions"]
        sim.reporters.append(reporter)
        sim.step(100)
    assert reporter.closed and reporter.frames_written == 4
    heavy = universe(T0922)
    aa = universe(str(tmp_path / "aa.pdb"))
    assert len(aa.atoms) == len(heavy.atoms) + 1  # all heavy atoms + OXT on the C terminus
    assert list(aa.residues.resnames) == list(heavy.residues.resnames)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        traj = mda.Universe(str(tmp_path / "aa.pdb"), str(out))
    assert len(traj.trajectory) == 4
    times = [ts.time for ts in traj.trajectory]
    np.testing.assert_allclose(times, [0.25, 0.5, 0.75, 1.0], atol=1e-3)  # ps: 25 steps of 10 fs
    # each frame's CA atoms are the simulation's CA beads at that step (with keep_beads: exactly)
    traj.trajectory[-1]
    final = sim.context.getState(getPositions=True).getPositions(asNumpy=True).value_in_unit(unit.angstrom)
    np.testing.assert_allclose(traj.select_atoms("name CA").positions, final, atol=6e-3)  # XTC stores 0.01 Å
    d = np.linalg.norm(np.diff(traj.select_atoms("name CA").positions, axis=0), axis=-1)
    assert 3.3 < d.min() and d.max() < 4.3


def test_backmap_reporter_dcd_samples_and_errors(tmp_path):
    sim, _ = ca_simulation()
    reporter = BackmapReporter(tmp_path / "aa.dcd", 10, backmapper=latcpb.Backmapper(model="geometric", samples=2))
    sim.reporters.append(reporter)
    sim.step(20)
    reporter.close()
    reporter.close()  # idempotent
    assert reporter.frames_written == 4  # 2 reports x 2 samples
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        traj = mda.Universe(str(tmp_path / "aa.pdb"), str(tmp_path / "aa.dcd"))
    assert len(traj.trajectory) == 4
    with pytest.raises(RuntimeError, match="closed"):
        sim.step(10)
    sim.reporters.clear()
    bad = BackmapReporter(tmp_path / "none.xtc", 5, backmapper=latcpb.Backmapper(model="geometric"),
                          select="name CB")
    sim.reporters.append(bad)
    with pytest.raises(LatcpbInputError, match="matched no atoms"):
        sim.step(5)
    with pytest.raises(LatcpbInputError, match="trajectory file"):
        BackmapReporter(tmp_path / "x.pdb", 5, backmapper=latcpb.Backmapper(model="geometric"))
