"""Run a small C-alpha model in OpenMM and backmap it on the fly with ``latcpb_openmm.BackmapReporter``.

Two CG models: a Go-like CA model built here from a real protein's CA trace (default: the bundled Trp-cage,
20 residues): harmonic CA-CA bonds (3.8 Å), harmonic CA angles at their native values, Gaussian native contacts and
a repulsive excluded-volume term, Langevin dynamics in a periodic box; or, with ``--hps``, OpenABC's HPS model of
the same sequence (``pip install openabc 'pandas<3'``), whose Topology has no bonds: the reporter then takes the
chain from the System's bonds. Every ``--interval`` steps the reporter backmaps the CA positions (in a background
thread) and appends them to an XTC with the simulation time, step and box (plus the all-atom topology PDB beside
it); frames it cannot backmap are counted, not raised (``--strict`` raises).

    python examples/cg_simulation_reporter.py --out cg_aa.xtc            # 5,000 steps of 10 fs
    python examples/cg_simulation_reporter.py --hps --out hps_aa.xtc     # the OpenABC HPS model
    python examples/cg_simulation_reporter.py --short --out /tmp/x.xtc   # a few seconds (used by the tests)
"""
import argparse
import os
import sys
import warnings

import numpy as np
import openmm as mm
import openmm.app as app
import openmm.unit as unit

from latcpb_openmm.relaxation import choose_platform

HERE = os.path.dirname(os.path.abspath(__file__))
DEFAULT_PDB = os.path.join(HERE, "data", "trpcage_ca.pdb")

BOND_LENGTH = 0.38       # nm, CA-CA
BOND_K = 2.0e4           # kJ/mol/nm^2
ANGLE_K = 40.0           # kJ/mol/rad^2
CONTACT_CUTOFF = 0.8     # nm, native contacts between CA i, j with |i - j| >= 3
CONTACT_DEPTH = 4.0      # kJ/mol
CONTACT_WIDTH = 0.05     # nm
REPULSION_SIGMA = 0.4    # nm
BEAD_MASS = 110.0        # Da
BOX = 8.0                # nm, periodic box edge of the Go model


def build_ca_model(ca_xyz_nm, resnames, resids, chain_id="A", box_nm=None):
    """(openmm Topology with one CA atom per residue and CA-CA bonds, System of the Go-like CA model) for CA
    positions [N, 3] nm; ``box_nm``: cubic periodic box edge (None: no box)."""
    n = len(ca_xyz_nm)
    top = app.Topology()
    chain = top.addChain(chain_id)
    atoms = []
    for name, rid in zip(resnames, resids):
        residue = top.addResidue(name, chain, id=str(rid))
        atoms.append(top.addAtom("CA", app.element.carbon, residue))
    for a, b in zip(atoms[:-1], atoms[1:]):
        top.addBond(a, b)
    system = mm.System()
    for _ in range(n):
        system.addParticle(BEAD_MASS)
    bonds = mm.HarmonicBondForce()
    for i in range(n - 1):
        bonds.addBond(i, i + 1, BOND_LENGTH, BOND_K)
    angles = mm.HarmonicAngleForce()
    for i in range(n - 2):
        u = ca_xyz_nm[i] - ca_xyz_nm[i + 1]
        v = ca_xyz_nm[i + 2] - ca_xyz_nm[i + 1]
        theta = np.arccos(np.clip(u @ v / np.linalg.norm(u) / np.linalg.norm(v), -1, 1))
        angles.addAngle(i, i + 1, i + 2, float(theta), ANGLE_K)
    contacts = mm.CustomBondForce("-depth*exp(-(r-r0)^2/(2*width^2))")
    contacts.addGlobalParameter("depth", CONTACT_DEPTH)
    contacts.addGlobalParameter("width", CONTACT_WIDTH)
    contacts.addPerBondParameter("r0")
    repulsion = mm.CustomNonbondedForce("eps*(sigma/r)^12")
    repulsion.addGlobalParameter("eps", 1.0)
    repulsion.addGlobalParameter("sigma", REPULSION_SIGMA)
    repulsion.setNonbondedMethod(mm.CustomNonbondedForce.CutoffNonPeriodic if box_nm is None else
                                 mm.CustomNonbondedForce.CutoffPeriodic)
    if box_nm is not None:
        vectors = [mm.Vec3(box_nm, 0, 0), mm.Vec3(0, box_nm, 0), mm.Vec3(0, 0, box_nm)]
        system.setDefaultPeriodicBoxVectors(*vectors)
        top.setPeriodicBoxVectors(vectors)
    repulsion.setCutoffDistance(1.0)
    for _ in range(n):
        repulsion.addParticle([])
    for i in range(n):
        for j in range(i + 1, n):
            d = float(np.linalg.norm(ca_xyz_nm[i] - ca_xyz_nm[j]))
            if j - i <= 2:
                repulsion.addExclusion(i, j)
            elif d < CONTACT_CUTOFF:
                contacts.addBond(i, j, [d])
                repulsion.addExclusion(i, j)
    for force in (bonds, angles, contacts, repulsion):
        system.addForce(force)
    return top, system


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--pdb", default=DEFAULT_PDB, help="protein whose CA trace defines the model")
    parser.add_argument("--out", default="cg_backmapped.xtc", help="all-atom trajectory (.xtc or .dcd)")
    parser.add_argument("--steps", type=int, default=5000, help="MD steps of 10 fs")
    parser.add_argument("--interval", type=int, default=500, help="steps between backmapped frames")
    parser.add_argument("--model", default="geometric", help="'geometric', 'latcpb' or a checkpoint path")
    parser.add_argument("--temperature", type=float, default=300.0, help="K")
    parser.add_argument("--seed", type=int, default=1)
    parser.add_argument("--platform", default=None, help="OpenMM platform (default: fastest)")
    parser.add_argument("--hps", action="store_true", help="OpenABC's HPS model instead of the Go model")
    parser.add_argument("--strict", action="store_true", help="raise on a frame that cannot be backmapped")
    parser.add_argument("--short", action="store_true", help="200 steps, a frame every 50 (a smoke test)")
    args = parser.parse_args(argv)
    if args.short:
        args.steps, args.interval = 200, 50

    import MDAnalysis as mda

    import latcpb
    from latcpb_openmm import BackmapReporter

    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        ca = mda.Universe(args.pdb).select_atoms("name CA")
    ca_nm = ca.positions.astype(np.float64) * 0.1
    integrator = mm.LangevinMiddleIntegrator(args.temperature * unit.kelvin, 10.0 / unit.picosecond,
                                             10.0 * unit.femtosecond)
    integrator.setRandomNumberSeed(args.seed)
    if args.hps:
        simulation = build_hps(args.pdb, integrator, args.platform)
    else:
        top, system = build_ca_model(ca_nm, ca.resnames, ca.resids, box_nm=BOX)
        simulation = app.Simulation(top, system, integrator, choose_platform(args.platform))
        simulation.context.setPositions(ca_nm * unit.nanometer)
    simulation.context.setVelocitiesToTemperature(args.temperature * unit.kelvin, args.seed)

    backmapper = latcpb.Backmapper(model=args.model, seed=args.seed)
    with BackmapReporter(args.out, args.interval, backmapper=backmapper, strict=args.strict) as reporter:
        simulation.reporters.append(reporter)
        simulation.step(args.steps)
    # close() (the with block) waited for the worker thread: every queued frame is written
    state = simulation.context.getState(getEnergy=True, getPositions=True)
    energy = state.getPotentialEnergy().value_in_unit(unit.kilojoule_per_mole)
    final = state.getPositions(asNumpy=True).value_in_unit(unit.angstrom)
    drift = np.sqrt(np.mean(np.sum((final - final.mean(0) - (ca.positions - ca.positions.mean(0))) ** 2, -1)))
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        aa = mda.Universe(reporter.topology_file, args.out)
    print(f"CG model: {len(ca)} beads, {args.steps} steps, final energy {energy:.1f} kJ/mol, "
          f"CA displacement from native (centred) {drift:.2f} Å")
    print(f"wrote {len(aa.trajectory)} all-atom frames of {len(aa.atoms)} atoms to {args.out} "
          f"(topology {reporter.topology_file})")
    aa.trajectory[-1]
    box = aa.trajectory.ts.dimensions
    print(f"times {aa.trajectory[0].time:g}-{aa.trajectory[-1].time:g} ps, last step "
          f"{aa.trajectory.ts.data.get('step')}, box {'none' if box is None else np.round(box, 1).tolist()}, "
          f"{aa.segments.n_segments} chain(s); frames not backmapped: {reporter.failed_frames}")
    return 0 if np.isfinite(energy) and len(aa.trajectory) == reporter.frames_written else 1


def build_hps(ca_pdb, integrator, platform=None):
    """OpenABC HPS model (Urry scale, Debye-Hückel) of a CA PDB in a 20 nm periodic box: its OpenMM Simulation."""
    import contextlib
    import io
    import tempfile

    try:
        from openabc.forcefields import HPSModel
        from openabc.forcefields.parsers import HPSParser
    except ImportError as err:
        raise SystemExit(f"--hps needs OpenABC: pip install openabc 'pandas<3' ({err})")
    with tempfile.TemporaryDirectory() as tmp, contextlib.redirect_stdout(io.StringIO()):
        cg_pdb = os.path.join(tmp, "cg.pdb")
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            import MDAnalysis as mda
            ca = mda.Universe(ca_pdb).select_atoms("name CA")
            ca.write(os.path.join(tmp, "ca.pdb"))
        model = HPSModel()
        model.append_mol(HPSParser(os.path.join(tmp, "ca.pdb")))
        model.atoms_to_pdb(cg_pdb)
        top = app.PDBFile(cg_pdb).getTopology()
        model.create_system(top, box_a=20, box_b=20, box_c=20)
        model.add_protein_bonds(force_group=1)
        model.add_contacts(force_group=2)
        model.add_dh_elec(force_group=3)
        model.set_simulation(integrator, platform_name=choose_platform(platform).getName(),
                             init_coord=ca.positions.astype(np.float64) * 0.1 * unit.nanometer)
    return model.simulation


if __name__ == "__main__":
    sys.exit(main())
