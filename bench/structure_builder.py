"""Structure builder on val: accuracy and validity of the shipped model and the geometric baseline, with the
decoder's raw NeRF output against the same degrees of freedom built by ``latcpb.geometry.structure``.

    OMP_NUM_THREADS=1 python bench/structure_builder.py [--entries N] [--frames F] [--out bench/STRUCTURE_BUILDER.json]

Rows: latcpb raw (decoder NeRF + shipped clash relief, no idealiser), latcpb built (its rotations, and chi fitted to
its side chains, built by the builder: ``structure.fit_structure``; then clash relief on the built side chains, 40
steps), the same with 7 relief steps and without relief, geometric (rules + builder), the references rebuilt
from their own degrees of freedom (dihedrals, and chi fitted: the builder's floor)
and the references themselves (validity only). Figures per entry are means over its frames, then means over entries:
heavy / backbone / side-chain RMSD (Å, interior residues, ``training.validation.structure_figures``) and the
validity figures of ``latcpb.metrics.validity`` (chain ends included).
"""
from __future__ import annotations

import argparse
import copy
import json
import os
import time

import numpy as np
import torch

from latcpb.geometry.structure import build_structure, extract_torsions, fit_structure
from latcpb.metrics.validity import find_disulfides, score_validity, validity_topology
from latcpb.model import load_generator
from latcpb.training.dataset import load_entry
from latcpb.training.validation import entry_layout, structure_figures

VAL = "/work/shared/data/val"
KEYS = ("heavy", "backbone", "side_chain", "angle_outlier_residue_pct", "angle_max_z", "overlap_residue_pct",
        "overlap_per_1000_atoms", "nonplanar_group_pct", "cbeta_outlier_pct", "d_residue_pct", "cis_peptide_pct",
        "angle_deviation_mean")


def _previous(lt):
    ci = lt.chain_index.numpy()
    prev = np.arange(len(ci)) - 1
    prev[0] = -1
    prev[1:][ci[1:] != ci[:-1]] = -1
    return prev


def figures(pred, ref, present, lt):
    out = structure_figures(pred.float(), ref.float(), present, lt)
    mask = lt.atom_mask.numpy()
    xyz = pred.double().numpy()
    topo = validity_topology(lt.restype.numpy(), mask, _previous(lt), find_disulfides(xyz, mask, lt.restype.numpy()))
    out.update(score_validity(topo, xyz, ref_xyz=ref.double().numpy()))
    return {k: out[k] for k in KEYS}


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--entries", type=int, default=6)
    ap.add_argument("--frames", type=int, default=2)
    ap.add_argument("--out", default="bench/STRUCTURE_BUILDER.json")
    args = ap.parse_args()
    names = sorted({f[:-4] for f in os.listdir(VAL) if f.endswith(".pdb")})[:args.entries]
    model = load_generator("latcpb")
    raw = copy.copy(model)
    raw.inference = {**model.inference, "structure_builder": False}
    no_relief = copy.copy(model)
    no_relief.inference = {**model.inference, "built_relief_steps": 0}
    relief_7 = copy.copy(model)
    relief_7.inference = {**model.inference, "built_relief_steps": 7}
    geometric = load_generator("geometric")
    rows = {"latcpb raw": raw, "latcpb built": model, "latcpb built, relief 7": relief_7,
            "latcpb built, no relief": no_relief, "geometric": geometric}
    results = {k: [] for k in list(rows) + ["reference rebuilt", "reference fitted", "reference"]}
    seconds = {k: 0.0 for k in results}
    for name in names:
        e = load_entry(VAL, name, max_frames=args.frames)
        _, lt = entry_layout(e)
        ref = torch.as_tensor(e["coords"][:args.frames])
        present = torch.as_tensor(e["present"])
        for label, gen in rows.items():
            t0 = time.time()
            pred = gen.generate(ref[:, :, 1].float(), lt, samples=1, rng=torch.Generator().manual_seed(0))
            seconds[label] += time.time() - t0
            results[label].append([figures(pred[k], ref[k], present, lt) for k in range(len(ref))])
        t0 = time.time()
        rebuilt = build_structure(ref[:, :, 1].double(), extract_torsions(ref.double(), lt), lt)
        seconds["reference rebuilt"] += time.time() - t0
        results["reference rebuilt"].append([figures(rebuilt[k], ref[k], present, lt) for k in range(len(ref))])
        fitted = fit_structure(ref.double(), lt, present)
        results["reference fitted"].append([figures(fitted[k], ref[k], present, lt) for k in range(len(ref))])
        topo = validity_topology(lt.restype.numpy(), present.numpy(), _previous(lt))
        results["reference"].append([{**{k: 0.0 for k in KEYS[:3]}, **score_validity(topo, ref[k].double().numpy(),
                                                                                     ref_xyz=ref[k].double().numpy())}
                                     for k in range(len(ref))])
        print(name, len(lt.restype), "residues", flush=True)
    table = {}
    for label, per_entry in results.items():
        means = [{k: float(np.nanmean([f[k] for f in frames])) for k in KEYS} for frames in per_entry]
        table[label] = {k: float(np.nanmean([m[k] for m in means])) for k in KEYS}
        table[label]["seconds"] = seconds[label]
    head = "%-26s" % "" + "".join("%10s" % k[:10] for k in KEYS)
    print(head)
    for label, row in table.items():
        print("%-26s" % label + "".join("%10.3f" % row[k] for k in KEYS))
    with open(args.out + ".tmp", "w") as f:
        json.dump({"entries": names, "frames": args.frames, "figures": table}, f, indent=1)
    os.replace(args.out + ".tmp", args.out)


if __name__ == "__main__":
    main()
