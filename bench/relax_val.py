"""Relax backmapped validation structures with OpenMM and summarise the per-frame reports (issue 4 figures).

    python bench/relax_val.py [--model MODEL] [--data ../shared/data/val] [--json bench/RELAX.json]

For every entry: the CA trace of the first frame is backmapped (default model), relaxed by
``latcpb_openmm.relax_universe`` with its defaults (amber14, vacuum, CA restraints, iteration cap) and reported:
seconds per frame, clashing residues before/after (%), CA drift RMS (Å), energies before/after (kJ/mol).
"""
import argparse
import glob
import json
import os
import time
import warnings

import MDAnalysis as mda

import latcpb
from latcpb_openmm import relax_universe


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model", default=None)
    parser.add_argument("--data", default=os.path.join(os.path.dirname(__file__), "..", "..", "shared", "data", "val"))
    parser.add_argument("--json", default=None)
    args = parser.parse_args()
    warnings.filterwarnings("ignore")
    backmapper = latcpb.Backmapper(model=args.model, seed=0)
    rows = []
    print(f"{'entry':12s} {'res':>4s} {'s/frame':>8s} {'clash% before':>13s} {'after':>6s} {'CA drift':>8s} "
          f"{'E before':>10s} {'E after':>10s} status")
    for pdb in sorted(glob.glob(os.path.join(args.data, "*.pdb"))):
        u = mda.Universe(pdb)
        aa = backmapper.backmap_universe(u, stop=1)
        start = time.perf_counter()
        _, reports = relax_universe(aa, progress=False)
        seconds = time.perf_counter() - start
        r = reports[0].__dict__ if hasattr(reports[0], "__dict__") else dict(reports[0])
        row = {"entry": os.path.basename(pdb)[:-4], "residues": len(aa.residues), "seconds": seconds, **r}
        rows.append(row)
        print(f"{row['entry']:12s} {row['residues']:4d} {seconds:8.1f} {r['clash_residues_before']:13.2f} "
              f"{r['clash_residues_after']:6.2f} {r['ca_drift_rms']:8.3f} {r['energy_before']:10.3g} "
              f"{r['energy_after']:10.3g} {r['status']}")
    worst = max(row["clash_residues_after"] for row in rows)
    print(f"max clashing residues after: {worst:.2f} %; max CA drift RMS: "
          f"{max(row['ca_drift_rms'] for row in rows):.3f} Å; all energies lowered: "
          f"{all(row['energy_after'] < row['energy_before'] for row in rows)}; model: {backmapper.model_name}")
    if args.json:
        with open(args.json, "w") as fh:
            json.dump({"model": backmapper.model_name, "entries": rows}, fh, indent=1, default=float)


if __name__ == "__main__":
    main()
