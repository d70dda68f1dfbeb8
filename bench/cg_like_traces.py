"""CG-like distorted CA traces made from the validation set, and how far ``refine_ca_trace`` has to move them.

    python bench/cg_like_traces.py                       # writes bench/results/cg_like/ (traces + JSON)
    python bench/cg_like_traces.py --frames 4 --seed 1 --out /tmp/cg_like
    python bench/cg_like_traces.py --backmap latcpb      # also: validity of the backmapped CG / refined traces

Every ``val`` entry (first ``--frames`` frames) is distorted by ``latcpb.training.augment.cg_like_trace`` with
spacing kept within 2.6-5.0 Å and straight segments (the CG-model traces of issue 10: HPS, MOFF, Mpipi bead spacing
2.5-5.1 Å, straight start structures). Written per entry: ``NAME_cg.pdb`` + ``NAME_cg.xtc`` (the distorted CA
trace, input for ``latcpb-backmap``), ``NAME_refined.xtc`` (after refinement). Reported per entry: % of residues
whose trace violates the valid ranges (``latcpb.geometry.ca_trace.TraceLimits``) in the reference, the distorted
and the refined trace; RMS and largest bead move of the refinement (goal: <= 0.5 Å RMS); frames refused; steps
longer than 4.2 Å (which the chain-break rule of ``latcpb.data.cg_topology`` would split); refinement time.
Chains come from the reference trace.
"""
from __future__ import annotations

import argparse
import json
import os
import sys
import time
from dataclasses import asdict, replace
from datetime import datetime, timezone
from pathlib import Path

import numpy as np
import torch

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE))
from common import DEFAULT_DATA, ca_trace, entries, load_reference, machine  # noqa: E402

BENCH_PERTURBATION = {"tangential": 0.4, "normal": 0.3, "max_shift": 0.9, "spacing": (2.6, 5.0),
                      "straight_fraction": 0.12, "straight_length": (4, 9)}


def write_trace(u_ca, coords, pdb_path, xtc_path):
    """CA-only Universe ``u_ca`` with frames ``coords`` [F, N, 3] Å: first frame to PDB, all to XTC (temp, rename)."""
    from MDAnalysis.coordinates.memory import MemoryReader

    u = u_ca.copy()
    u.load_new(np.asarray(coords, dtype=np.float32), format=MemoryReader)
    for path, frames in ((pdb_path, slice(0, 1)), (xtc_path, slice(None))):
        if path is None:
            continue
        tmp = path.with_name(path.stem + ".tmp" + path.suffix)
        with __import__("MDAnalysis").Writer(str(tmp), n_atoms=len(u.atoms)) as w:
            for _ in u.trajectory[frames]:
                w.write(u.atoms)
        os.replace(tmp, path)


KINDS = ("atomistic_ca", "cg", "refined", "reference")
VALIDITY_KEYS = ("angle_outlier_residue_pct", "overlap_residue_pct", "cis_peptide_pct", "nonplanar_group_pct")


def backmap_validity(model, u_ca, traces: dict, ref_universe) -> dict:
    """Validity figures (``latcpb.metrics.validity.structure_validity``, means over frames) of the backmapped
    structures of each named CA trace [F, N, 3] in ``traces``, and of the reference structures."""
    from latcpb import Backmapper
    from latcpb.metrics.validity import structure_validity

    bm = Backmapper(model=model, seed=0, note=lambda text: None)
    plan = bm.plan(u_ca.atoms, source="cg_like", positions=traces["refined"])
    out = {}
    for name, ca in traces.items():
        u = plan.universe(bm.backmap_coordinates(plan, np.asarray(ca, dtype=np.float32)))
        figs = structure_validity(u.atoms, source=name)
        out[name] = {k: round(float(np.mean([f[k] for f in figs])), 3) for k in VALIDITY_KEYS}
    figs = structure_validity(ref_universe.select_atoms("protein"), source="reference")
    out["reference"] = {k: round(float(np.mean([f[k] for f in figs])), 3) for k in VALIDITY_KEYS}
    return out


def run_entry(entry, frames, params, generator, out, model=None):
    from latcpb.data.cg_topology import residue_topology
    from latcpb.geometry.ca_trace import refine_ca_trace, trace_violations
    from latcpb.training.augment import cg_like_trace

    u_ref = load_reference(entry, frames)
    u_ca = ca_trace(u_ref)
    ref = torch.tensor(np.stack([u_ca.trajectory[i].positions.copy() for i in range(len(u_ca.trajectory))]),
                       dtype=torch.float64)                                              # [F, N, 3] Å
    topo = residue_topology(u_ca.atoms, ref[0].numpy(), source=str(entry["pdb"]))
    layout = topo.layout
    cg = cg_like_trace(ref, layout.chain_index, params, generator).to(torch.float32)
    t0 = time.perf_counter()
    res = refine_ca_trace(cg, layout, max_rms=0.5)
    seconds = time.perf_counter() - t0
    viol = lambda x: 100.0 * float(trace_violations(x, layout).residues.float().mean())  # noqa: E731
    same = torch.as_tensor(layout.chain_index[1:] == layout.chain_index[:-1])
    d = torch.linalg.norm(cg[:, 1:] - cg[:, :-1], dim=-1)[:, same]
    write_trace(u_ca, cg.numpy(), out / f"{entry['name']}_cg.pdb", out / f"{entry['name']}_cg.xtc")
    write_trace(u_ca, res.ca.numpy(), None, out / f"{entry['name']}_refined.xtc")
    row = {"name": entry["name"], "residues": len(layout), "frames": int(cg.shape[0]),
            "violating_reference_pct": round(viol(ref), 3), "violating_cg_pct": round(viol(cg.double()), 3),
            "violating_refined_pct": round(viol(res.ca.double()), 3),
            "cg_spacing_min": round(float(d.min()), 3), "cg_spacing_max": round(float(d.max()), 3),
            "cg_steps_over_4.2_pct": round(100.0 * float((d > 4.2).float().mean()), 3),
            "distortion_rms": round(float((cg.double() - ref).norm(dim=-1).square().mean(-1).sqrt().mean()), 3),
            "move_rms_mean": round(float(res.rms.mean()), 3), "move_rms_max": round(float(res.rms.max()), 3),
            "move_max": round(float(res.max_move.max()), 3), "frames_refused": int((~res.accepted).sum()),
            "frames_invalid_after": int((~res.valid).sum()), "seconds_per_frame": round(seconds / cg.shape[0], 4)}
    if model is not None:
        row["backmapped"] = backmap_validity(model, u_ca, {"atomistic_ca": ref.numpy(), "cg": cg.numpy(),
                                                           "refined": res.ca.numpy()}, u_ref)
    return row


def throughput(data_dir, params, seed, n_residues=100, batch=32, repeats=3):
    """Frames per second of ``refine_ca_trace`` on ``batch`` CG-like frames of the first val entry with at least
    ``n_residues`` residues, cut to that length (best of ``repeats``)."""
    from latcpb.geometry.ca_trace import refine_ca_trace
    from latcpb.training.augment import cg_like_trace

    entry = next(e for e in entries(data_dir) if e["residues"] >= n_residues)
    u_ca = ca_trace(load_reference(entry, 1))
    ref = torch.tensor(u_ca.atoms.positions[:n_residues], dtype=torch.float64)
    chain = np.zeros(n_residues, dtype=int)
    cg = cg_like_trace(ref.expand(batch, -1, -1), chain, params, torch.Generator().manual_seed(seed)).float()
    best = float("inf")
    for _ in range(repeats):
        t0 = time.perf_counter()
        refine_ca_trace(cg, chain)
        best = min(best, time.perf_counter() - t0)
    return {"entry": entry["name"], "residues": n_residues, "batch": batch, "frames_per_s": round(batch / best, 1)}


def main(argv=None):
    from latcpb.training.augment import CGPerturbation

    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--data", type=Path, default=DEFAULT_DATA)
    ap.add_argument("--out", type=Path, default=HERE / "results" / "cg_like")
    ap.add_argument("--frames", type=int, default=5, help="frames per entry (first ones)")
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--entries", nargs="*", help="entry names (default: all)")
    ap.add_argument("--backmap", metavar="MODEL", help="also backmap the CG and the refined traces with MODEL"
                    " (latcpb, geometric, a checkpoint) and report the validity of the structures")
    args = ap.parse_args(argv)
    torch.set_num_threads(int(os.environ.get("OMP_NUM_THREADS", "1")))
    args.out.mkdir(parents=True, exist_ok=True)
    params = replace(CGPerturbation(), **BENCH_PERTURBATION)
    generator = torch.Generator().manual_seed(args.seed)
    rows = [run_entry(e, args.frames, params, generator, args.out, args.backmap)
            for e in entries(args.data, args.entries)]
    cols = [("name", "entry"), ("residues", "res."), ("frames", "fr."), ("violating_reference_pct", "viol. ref %"),
            ("violating_cg_pct", "viol. CG %"), ("violating_refined_pct", "viol. refined %"),
            ("cg_spacing_min", "CG d min"), ("cg_spacing_max", "CG d max"),
            ("cg_steps_over_4.2_pct", "CG d > 4.2 %"), ("distortion_rms", "distortion Å"),
            ("move_rms_mean", "move RMS Å"), ("move_rms_max", "max RMS Å"), ("move_max", "max bead Å"),
            ("frames_refused", "refused"), ("seconds_per_frame", "s/frame")]
    print("| " + " | ".join(c[1] for c in cols) + " |")
    print("|" + "---|" * len(cols))
    for r in rows:
        print("| " + " | ".join(str(r[c[0]]) for c in cols) + " |")
    summary = {"entries": len(rows), "frames": sum(r["frames"] for r in rows),
               "move_rms_mean": round(float(np.mean([r["move_rms_mean"] for r in rows])), 3),
               "move_rms_max": max(r["move_rms_max"] for r in rows),
               "violating_reference_pct_mean": round(float(np.mean([r["violating_reference_pct"] for r in rows])), 3),
               "violating_cg_pct_mean": round(float(np.mean([r["violating_cg_pct"] for r in rows])), 3),
               "violating_refined_pct_mean": round(float(np.mean([r["violating_refined_pct"] for r in rows])), 3),
               "frames_refused": sum(r["frames_refused"] for r in rows)}
    if args.backmap:
        print(f"\nbackmapped with {args.backmap}: % residues with angle outliers / severe overlaps / non-Pro cis,"
              " % planar groups non-planar (CA of the reference | CG trace | refined trace | reference structure)")
        for r in rows:
            b = r["backmapped"]
            print(f"| {r['name']} | " + " | ".join(
                "/".join(str(b[t][k]) for k in VALIDITY_KEYS) for t in KINDS) + " |")
        summary["backmapped"] = {t: {k: round(float(np.mean([r["backmapped"][t][k] for r in rows])), 3)
                                     for k in VALIDITY_KEYS} for t in KINDS}
    summary["throughput"] = throughput(args.data, params, args.seed)
    print("summary:", json.dumps(summary))
    report = {"created": datetime.now(timezone.utc).isoformat(timespec="seconds"),
              "command": "python bench/cg_like_traces.py " + " ".join(argv if argv is not None else sys.argv[1:]),
              "perturbation": asdict(params), "seed": args.seed, "machine": machine(), "summary": summary,
              "entries": rows}
    path = args.out / "cg_like_traces.json"
    tmp = path.with_suffix(".json.tmp")
    tmp.write_text(json.dumps(report, indent=1), encoding="utf-8")
    os.replace(tmp, path)
    print(f"wrote {path} and the traces in {args.out}")


if __name__ == "__main__":
    main()
