"""Backmap a C-alpha frame, relax it with OpenMM and run implicit-solvent MD from it.

    python examples/relax_and_simulate.py                 # T0922 (74 residues), 1,000 steps of 2 fs, OBC2
    python examples/relax_and_simulate.py --short         # 100 steps (a smoke test, used by the tests)

Steps: CA atoms of the input PDB -> ``latcpb.backmap_universe(u_cg, model=...)`` (heavy atoms) ->
``latcpb_openmm.relax_universe`` (hydrogens, CA-restrained minimisation with the L-chirality guard, report with
chirality, cis peptides and bond lengths re-checked) -> ``make_simulation`` (implicit
solvent, Langevin, 2 fs, H-bond constraints) -> MD, printing the energy and the heavy-atom RMSD drift from the
relaxed structure.
"""
import argparse
import os
import sys
import warnings

import numpy as np

HERE = os.path.dirname(os.path.abspath(__file__))
DEFAULT_PDB = os.path.join(HERE, "data", "trpcage_ca.pdb")


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--pdb", default=DEFAULT_PDB,
                        help="PDB whose CA atoms are the CG input (default: the bundled Trp-cage CA trace)")
    parser.add_argument("--model", default="geometric", help="'geometric', 'latcpb' or a checkpoint path")
    parser.add_argument("--steps", type=int, default=1000, help="MD steps of 2 fs")
    parser.add_argument("--solvent", default="obc", choices=["obc", "gbn2", "vacuum"])
    parser.add_argument("--forcefield", default="amber14")
    parser.add_argument("--platform", default=None, help="OpenMM platform (default: fastest)")
    parser.add_argument("--report", default=None, help="write the relaxation report here (.json or .csv)")
    parser.add_argument("--out", default=None, help="write the relaxed structure (with hydrogens) as PDB")
    parser.add_argument("--seed", type=int, default=1)
    parser.add_argument("--short", action="store_true", help="100 MD steps")
    args = parser.parse_args(argv)
    if args.short:
        args.steps = 100

    import MDAnalysis as mda
    import openmm.unit as unit
    from MDAnalysis.analysis.rms import rmsd

    import latcpb
    from latcpb_openmm import make_simulation, relax_universe, write_report

    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        u_cg = mda.Merge(mda.Universe(args.pdb).select_atoms("name CA"))
    u_aa = latcpb.backmap_universe(u_cg, model=args.model, seed=args.seed)
    print(f"backmapped {u_cg.atoms.n_atoms} CA -> {u_aa.atoms.n_atoms} heavy atoms ({args.model})")

    relaxed, reports = relax_universe(u_aa, forcefield=args.forcefield, solvent="vacuum", hydrogens=True,
                                      progress=False)
    r = reports[0]
    print(f"relax: {r.status} in {r.seconds:.1f} s; energy {r.energy_before:.4g} -> {r.energy_after:.4g} kJ/mol; "
          f"clashing residues {r.clash_residues_before:.1f} -> {r.clash_residues_after:.1f} %; "
          f"CA drift {r.ca_drift_rms:.3f} Å RMS; bond outliers {r.bond_outliers_before} -> {r.bond_outliers_after}; "
          f"D residues {r.d_residues_before} -> {r.d_residues_after}; non-Pro cis peptides {r.cis_before} -> "
          f"{r.cis_after}" + (f"; {r.reason}" if r.reason else ""))
    if args.report:
        write_report(reports, args.report)
    if args.out:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            relaxed.atoms.write(args.out)
    if r.status != "ok":  # "failed" (not relaxed) or "damaged" (a D residue or a broken bond after relaxation)
        print(f"relaxation {r.status}:", r.reason)
        return 1

    simulation = make_simulation(relaxed, forcefield=args.forcefield, solvent=args.solvent,
                                 platform=args.platform, temperature=300, seed=args.seed)
    heavy = np.array([a.index for a in simulation.topology.atoms() if a.element.symbol != "H"])
    start = simulation.context.getState(getPositions=True).getPositions(asNumpy=True).value_in_unit(unit.angstrom)
    chunk = max(args.steps // 10, 1)
    energies, drifts = [], []
    done = 0
    while done < args.steps:
        n = min(chunk, args.steps - done)
        simulation.step(n)
        done += n
        state = simulation.context.getState(getEnergy=True, getPositions=True)
        xyz = state.getPositions(asNumpy=True).value_in_unit(unit.angstrom)
        energies.append(state.getPotentialEnergy().value_in_unit(unit.kilojoule_per_mole))
        drifts.append(rmsd(xyz[heavy], start[heavy], center=True, superposition=True))
        print(f"step {done:5d}: potential {energies[-1]:10.1f} kJ/mol, heavy-atom RMSD from start "
              f"{drifts[-1]:.2f} Å")
    stable = bool(np.all(np.isfinite(energies)) and max(drifts) < 3.0)
    print(f"{args.steps} steps of {args.solvent} MD ({simulation.topology.getNumAtoms()} atoms, "
          f"{simulation.context.getPlatform().getName()} platform): "
          f"{'stable' if stable else 'UNSTABLE'} (finite energies, max RMSD drift {max(drifts):.2f} Å)")
    return 0 if stable else 1


if __name__ == "__main__":
    sys.exit(main())
