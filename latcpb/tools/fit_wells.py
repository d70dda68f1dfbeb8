"""Fit the Ramachandran and rotamer wells of ``latcpb.metrics.wells`` on a data set (the training set).

    python -m latcpb.tools.fit_wells /work/shared/data/train -o latcpb/metrics/data/wells.json

Every entry of INDEX.tsv is read through MDAnalysis with ``latcpb.training.dataset.load_entry`` (at most
``--frames`` evenly spaced frames; residues whose bond geometry it marks damaged are left out). phi/psi and
chi1/chi2 come from ``latcpb.metrics.torsions``; histograms, smoothing and levels from ``latcpb.metrics.wells``.
"""
from __future__ import annotations

import argparse
import json
import os
import sys
from datetime import datetime, timezone

import numpy as np

from latcpb.geometry import residue_constants as rc
from latcpb.metrics import torsions as tor
from latcpb.metrics import wells as wl
from latcpb.metrics.validity import chain_predecessors


def collect(folder: str, frames: int, progress: bool = True) -> dict:
    """Torsions of every good residue of every frame: {"rama": {class: (phi, psi)}, "rotamer": {res: chis}}."""
    from latcpb.training.dataset import load_entry, read_index

    rama = {c: ([], []) for c in wl.RAMA_CLASSES}
    rot = {r: ([], []) for r in wl.ROTAMER_RESIDUES}
    names = read_index(folder)
    for k, name in enumerate(names):
        try:
            entry = load_entry(folder, name, max_frames=frames)
        except Exception as exc:  # a damaged entry is skipped, and said so
            print(f"  skip {name}: {' '.join(str(exc).split())}", file=sys.stderr)
            continue
        restype, present = entry["restype"], entry["present"]
        previous = chain_predecessors(entry["chain_index"])
        cls = wl.rama_class(restype, wl.following_restype(restype, previous))
        for xyz, good in zip(entry["coords"].astype(np.float64), entry["good"]):
            phi, psi, _, phi_m, psi_m, _ = tor.backbone_torsions(xyz, present, previous)
            chi, chi_m = tor.chi_angles(xyz, present, restype)
            chi2 = wl.fold_chi2(chi[:, 1], restype)
            ok = good & phi_m & psi_m
            for c, cname in enumerate(wl.RAMA_CLASSES):
                sel = ok & (cls == c)
                rama[cname][0].append(phi[sel])
                rama[cname][1].append(psi[sel])
            for rname in wl.ROTAMER_RESIDUES:
                sel = good & (restype == rc.RESTYPE_INDEX[rname]) & chi_m[:, 0]
                if len(rc.CHI_ATOMS[rname]) > 1:
                    sel &= chi_m[:, 1]
                rot[rname][0].append(chi[sel, 0])
                rot[rname][1].append(chi2[sel])
        if progress:
            print(f"  {k + 1}/{len(names)} {name}", file=sys.stderr, flush=True)
    cat = lambda pair: (np.concatenate(pair[0]), np.concatenate(pair[1]))  # noqa: E731
    return {"rama": {c: cat(v) for c, v in rama.items()}, "rotamer": {r: cat(v) for r, v in rot.items()}}


def fit(samples: dict) -> dict:
    """The JSON-ready wells table of collected torsions."""
    table = {"rama": {}, "rotamer": {}}
    for cname, (phi, psi) in samples["rama"].items():
        dens = wl.smoothed_density(phi, psi)
        table["rama"][cname] = {"axes": ["phi", "psi"], "levels": wl.density_levels(dens, phi, psi),
                                "density": dens.tolist()}
    for rname, (chi1, chi2) in samples["rotamer"].items():
        angles = (chi1, chi2) if len(rc.CHI_ATOMS[rname]) > 1 else (chi1,)
        dens = wl.smoothed_density(*angles)
        table["rotamer"][rname] = {"axes": ["chi1", "chi2"][:len(angles)],
                                   "levels": wl.density_levels(dens, *angles),
                                   "density": dens.tolist()}
    return table


def main(argv=None):
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("data", help="data folder with INDEX.tsv (NAME.pdb [+ NAME.xtc])")
    p.add_argument("-o", "--out", default=str(wl.DATA_PATH))
    p.add_argument("--frames", type=int, default=5, help="at most this many frames per entry")
    args = p.parse_args(argv)
    table = fit(collect(args.data, args.frames))
    table = {"source": {"data": os.path.abspath(args.data), "frames_per_entry": args.frames,
                        "fitted": datetime.now(timezone.utc).strftime("%Y-%m-%d"),
                        "command": "python -m latcpb.tools.fit_wells " + " ".join(argv or sys.argv[1:])},
             "rule": (f"36 x 36 (or 36) histograms of 10° bins, Gaussian-smoothed (sigma {wl.SMOOTHING_BINS:g} bin, "
                      "periodic), scaled to max 1; outlier: density of the residue's bin below levels.outlier = the "
                      f"{100 * wl.OUTLIER_FRACTION:g} % quantile of the densities at the training points; not "
                      f"favoured: below levels.allowed ({100 * wl.ALLOWED_FRACTION:g} %). Ramachandran classes: GLY, "
                      "PRO, prePRO (before a PRO, not GLY/PRO), general. chi2 of ASP/PHE/TYR folded to 180°."),
             **table}
    tmp = args.out + ".tmp"
    with open(tmp, "w", encoding="utf-8") as fh:
        json.dump(table, fh, separators=(",", ":"))
    os.replace(tmp, args.out)
    print(f"wrote {args.out} ({os.path.getsize(args.out) / 1e3:.0f} kB)")


if __name__ == "__main__":
    main()
