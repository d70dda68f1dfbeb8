"""BackmapReporter on real OpenMM CG models: an OpenABC HPS model of an IDP (chains from the simulation's own
System bonds, times, steps and box in every frame, backmapping in a background thread) and frames it cannot
backmap (counted and logged, never raised into ``simulation.step()`` unless ``strict``).

Data: tests/data/val/PED00151val.pdb (PED00151, a 46-residue IDP from GenZProt's validation split, see
tests/data/val/INDEX.tsv) is the OpenABC HPS model's sequence and start structure; tests/data/mini/T0922.pdb for
the Go-like CA model of examples/cg_simulation_reporter.py.
"""
import logging
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
from latcpb_openmm import BackmapReporter  # noqa: E402

HERE = os.path.dirname(__file__)
IDP = os.path.join(HERE, "data", "val", "PED00151val.pdb")
T0922 = os.path.join(HERE, "data", "mini", "T0922.pdb")
BOX_NM = 12.0
sys.path.insert(0, os.path.join(HERE, "..", "examples"))
from cg_simulation_reporter import build_ca_model  # noqa: E402


def read(*paths):
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        return mda.Universe(*paths)


@pytest.fixture(scope="module")
def hps_two_idps(tmp_path_factory):
    """OpenABC HPS model of two copies of PED00151 (the second 3 nm away) in a 12 nm periodic box; its CA PDB has no
    TER and one chain ID, so OpenMM's Topology has one chain and no bonds: the chain is in the System's bonds."""
    openabc = pytest.importorskip("openabc")  # noqa: F841  (optional test extra, needs pandas<3)
    from openabc.forcefields import HPSModel
    from openabc.forcefields.parsers import HPSParser

    work = tmp_path_factory.mktemp("hps")
    ca_pdb, cg_pdb = str(work / "ca.pdb"), str(work / "cg.pdb")
    import contextlib
    import io
    with contextlib.redirect_stdout(io.StringIO()):  # OpenABC prints its progress
        protein = HPSParser.from_atomistic_pdb(IDP, ca_pdb)
        model = HPSModel()
        model.append_mol(protein)
        second = HPSParser(ca_pdb)
        second.atoms.loc[:, "x"] += 30.0
        model.append_mol(second)
        model.atoms_to_pdb(cg_pdb)
        top = app.PDBFile(cg_pdb).getTopology()
        model.create_system(top, box_a=BOX_NM, box_b=BOX_NM, box_c=BOX_NM)
        model.add_protein_bonds(force_group=1)
        model.add_contacts(force_group=2)
        model.add_dh_elec(force_group=3)
        integrator = mm.LangevinMiddleIntegrator(300 * unit.kelvin, 1 / unit.picosecond, 10 * unit.femtosecond)
        integrator.setRandomNumberSeed(7)
        xyz = read(cg_pdb).atoms.positions * 0.1
        model.set_simulation(integrator, platform_name="CPU", init_coord=xyz * unit.nanometer)
    model.simulation.context.setVelocitiesToTemperature(300 * unit.kelvin, 7)
    return model.simulation, work


def test_reporter_on_openabc_hps_keeps_chains_times_steps_box(hps_two_idps, tmp_path):
    sim, _ = hps_two_idps
    assert sim.topology.getNumChains() == 1 and sim.topology.getNumBonds() == 0  # chains only in the System
    out = tmp_path / "aa.xtc"
    start = sim.currentStep
    with BackmapReporter(out, 20, backmapper=latcpb.Backmapper(model="geometric", seed=0), queue_size=2) as rep:
        sim.reporters.append(rep)
        sim.step(100)
        final = sim.context.getState(getPositions=True).getPositions(asNumpy=True).value_in_unit(unit.angstrom)
    sim.reporters.remove(rep)
    assert rep.failed_frames == 0 and rep.frames_written == 5 and rep.reports_received == 5
    traj = read(str(tmp_path / "aa.pdb"), str(out))
    assert len(traj.trajectory) == 5
    # two chains of 46 residues, each its own chain ID and segment (the core's chain rule on the System's bonds)
    assert [s.residues.n_residues for s in traj.segments] == [46, 46]
    assert len({tuple(set(s.atoms.chainIDs)) for s in traj.segments}) == 2
    steps = start + 20 * np.arange(1, 6)
    np.testing.assert_allclose([ts.time for ts in traj.trajectory], steps * 0.01, atol=1e-4)  # ps, 10 fs steps
    assert [ts.data["step"] for ts in traj.trajectory] == list(steps)
    for ts in traj.trajectory:
        np.testing.assert_allclose(ts.dimensions, [BOX_NM * 10] * 3 + [90] * 3, rtol=1e-5)
        for seg in traj.segments:  # no broken peptide bond inside a chain in any frame
            c = seg.atoms.select_atoms("name C").positions[:-1]
            n = seg.atoms.select_atoms("name N").positions[1:]
            assert np.linalg.norm(c - n, axis=-1).max() < 2.0  # bonded (a split chain leaves a gap of Å)
    traj.trajectory[-1]
    # the CA atoms are the simulation's beads, moved by the trace refinement where HPS bonds are too soft or short,
    # then near residues where no peptide rotations give a valid backbone (admit_backbone)
    import torch

    from latcpb.geometry.ca_trace import admit_backbone

    refined = torch.as_tensor(rep.backmapper.refine_trace(rep._plan, final[None].astype(np.float32))[0])
    expected = admit_backbone(refined, rep._plan.layout_tensors)[0].to(refined.dtype).numpy()[0]
    np.testing.assert_allclose(traj.select_atoms("name CA").positions, expected, atol=6e-3)  # XTC: 0.01 Å
    assert "CRYST1  120.000  120.000  120.000" in open(tmp_path / "aa.pdb").read()


def split_ca_simulation():
    """Go-like CA model of T0922 whose Topology puts the last residue in a chain of its own: the core's chain rule
    refuses a chain of 1 residue, so every report fails to backmap (as a MOFF model's did in issue 11)."""
    ca = read(T0922).select_atoms("name CA")
    xyz = ca.positions.astype(float) * 0.1
    _, system = build_ca_model(xyz, ca.resnames, ca.resids)
    top = app.Topology()
    chains = [top.addChain("A"), top.addChain("B")]
    for k, (name, rid) in enumerate(zip(ca.resnames, ca.resids)):
        res = top.addResidue(name, chains[int(k == len(ca) - 1)], id=str(rid))
        top.addAtom("CA", app.element.carbon, res)
    integrator = mm.LangevinMiddleIntegrator(300 * unit.kelvin, 10 / unit.picosecond, 10 * unit.femtosecond)
    integrator.setRandomNumberSeed(3)
    sim = app.Simulation(top, system, integrator, mm.Platform.getPlatformByName("CPU"))
    sim.context.setPositions(xyz * unit.nanometer)
    return sim


@pytest.mark.parametrize("background", [True, False])
def test_failing_frames_are_counted_not_raised(tmp_path, caplog, background):
    sim = split_ca_simulation()
    rep = BackmapReporter(tmp_path / "aa.xtc", 10, backmapper=latcpb.Backmapper(model="geometric"),
                          background=background)
    sim.reporters.append(rep)
    with caplog.at_level(logging.WARNING, logger="latcpb_openmm.reporter"), pytest.warns(RuntimeWarning):
        sim.step(50)  # five reports, none can be backmapped: the simulation goes on
        rep.close()
    assert sim.currentStep == 50 and rep.failed_frames == 5 and rep.frames_written == 0
    assert "chain of 1 residue" in rep.failures[0][1] and rep.failures[0][0] == 10
    assert sum("frame not backmapped" in r.message for r in caplog.records) == 5


def test_strict_mode_raises(tmp_path):
    sim = split_ca_simulation()
    rep = BackmapReporter(tmp_path / "a.xtc", 10, backmapper=latcpb.Backmapper(model="geometric"), strict=True,
                          background=False)
    sim.reporters.append(rep)
    with pytest.raises(LatcpbInputError, match="chain of 1 residue"):
        sim.step(10)  # raised into simulation.step()
    sim.reporters.clear()
    rep = BackmapReporter(tmp_path / "b.xtc", 10, backmapper=latcpb.Backmapper(model="geometric"), strict=True)
    sim.reporters.append(rep)
    sim.step(10)  # queued to the worker
    with pytest.raises(LatcpbInputError, match="chain of 1 residue"):
        rep.close()  # ... and raised where the simulation thread next meets the reporter
    assert rep.closed and rep.failed_frames == 1
