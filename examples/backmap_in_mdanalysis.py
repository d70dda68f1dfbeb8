"""Backmap a CA trajectory inside an MDAnalysis script and analyse the all-atom result.

    python examples/backmap_in_mdanalysis.py [--model geometric]
"""
import argparse
import os

import MDAnalysis as mda
from MDAnalysis.analysis.dihedrals import Ramachandran

import latcpb

HERE = os.path.dirname(os.path.abspath(__file__))


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model", default=None, help="latcpb (default when shipped), geometric or a checkpoint")
    args = parser.parse_args()
    cg = mda.Universe(os.path.join(HERE, "data", "trpcage_ca.pdb"), os.path.join(HERE, "data", "trpcage_ca.xtc"))
    aa = latcpb.backmap_universe(cg, model=args.model, seed=0)
    print(f"{len(cg.atoms)} CA beads x {len(cg.trajectory)} frames -> {len(aa.atoms)} heavy atoms x "
          f"{len(aa.trajectory)} frames")
    rama = Ramachandran(aa.select_atoms("protein").residues[1:-1]).run()
    print(f"phi/psi of {rama.results.angles.shape[1]} residues over {rama.results.angles.shape[0]} frames; "
          f"first residue, frame 0: {rama.results.angles[0, 0].round(1)}")


if __name__ == "__main__":
    main()
