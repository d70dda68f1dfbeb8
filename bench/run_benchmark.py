"""Accuracy and speed benchmark on the validation set: LatCPB models and PULCHRA on the same CA traces.

    nice -n 10 python bench/run_benchmark.py --out bench/results            # all entries, all frames
    python bench/run_benchmark.py --out bench/results --models default geometric --temperatures 1.0
    python bench/run_benchmark.py --models default geometric --no-pulchra --entries 2JOF CLN025

For every entry of DATA/INDEX.tsv: the CA atoms of every frame form the input trace; each LatCPB model
(``latcpb.Backmapper(model=...)``; ``default`` = the shipped model) and PULCHRA (PyPI ``pulchra``, default settings,
one CA-only PDB per frame) and optionally CGBack (PyPI ``cgback`` 1.1.1, ``--cgback``: its ``cgback`` command on a
CA-only PDB per frame, CPU; ~10-30 s a frame, so only the first ``--cgback-frames`` frames of each entry) rebuild all
heavy atoms; ``latcpb.metrics.evaluate`` scores them against the reference. Tables list validity first (chain ends
included; a ``reference`` row scores the reference structures themselves), then accuracy.
Writes OUT/benchmark.json, OUT/<method>/<entry>.json, bench/BENCHMARKS.md (``--markdown``) and next to it
BENCHMARKS.json (the same result with the speed study).
PULCHRA and CGBack outputs are cached in --cache (keyed by the CA coordinates) with their timings: they are then
not rerun.
"""
from __future__ import annotations

import argparse
import hashlib
import json
import shlex
import shutil
import subprocess
import sys
import time
import warnings
from datetime import datetime, timezone
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent))
from common import DEFAULT_DATA, ca_trace, entries, load_reference, machine, quiet_universe  # noqa: E402

from latcpb.metrics.validity import VALIDITY_DETAIL_KEYS, VALIDITY_KEYS  # noqa: E402

VALIDITY_NAMES = {k for k, _, _ in VALIDITY_KEYS + VALIDITY_DETAIL_KEYS}
HEADLINE = [*VALIDITY_KEYS,  # (key, column title, format): validity first (chain ends included), then accuracy
    ("rmsd_heavy", "RMSD heavy (Å)", ".3f"),
    ("rmsd_heavy_superposed", "RMSD heavy, superposed", ".3f"),
    ("rmsd_backbone", "RMSD backbone", ".3f"),
    ("rmsd_sidechain", "RMSD side chain", ".3f"),
    ("ged_signed", "GED", ".4f"),
    ("ged_corrected", "GED corrected", ".4f"),
    ("clash_residue_pct", "clash residues (%)", ".2f"),
    ("bond_score", "bond score", ".4f"),
    ("torsion_kl", "torsion KL", ".3f"),
    ("pooled_kl_chi1", "pooled KL chi1", ".3f"),
    ("pooled_kl_chi2", "pooled KL chi2", ".3f"),
    ("d_residues", "D residues", ".2f"),
    ("cis_peptides", "non-Pro cis", ".2f"),
    ("cis_peptides_spurious", "spurious non-Pro cis", ".2f"),
    ("ca_rmsd", "CA RMSD (Å)", ".3f"),
]
DETAIL = [*VALIDITY_DETAIL_KEYS,
    ("rmsd_heavy_with_termini", "RMSD heavy +termini", ".3f"),
    ("rmsd_heavy_superposed_with_termini", "superposed +termini", ".3f"),
    ("rmsd_backbone_with_termini", "backbone +termini", ".3f"),
    ("rmsd_sidechain_with_termini", "side chain +termini", ".3f"),
    ("clash_pair_pct", "clash pairs (%)", ".3f"),
    ("bond_rmsd", "bond RMSD (Å)", ".3f"),
    ("kl_phi", "KL phi", ".3f"), ("kl_psi", "KL psi", ".3f"), ("kl_chi1", "KL chi1", ".3f"),
    ("kl_chi2", "KL chi2", ".3f"),
    ("coverage", "coverage", ".4f"),
]


def _method_name(model: str, temperature=None) -> str:
    name = "latcpb" if model in ("default", "latcpb") else f"latcpb-{Path(model).stem}"
    return name if temperature is None else f"{name}-T{temperature:g}"


def run_latcpb(model: str, ref_entries, max_frames, samples, batch_size, device, seed, temperature=None,
               relief_steps=None):
    """Backmap every entry with one LatCPB model; yields (entry name, gen Universe, seconds, frames).
    ``temperature``: sample the model's learned distribution (``--temperature``) instead of its mode-seeking default;
    ``relief_steps``: clash-relief steps (``--relief-steps``; the model's default when None)."""
    import latcpb

    t0 = time.perf_counter()
    bm = latcpb.Backmapper(model=None if model == "default" else model, samples=samples, seed=seed,
                           device=device, batch_size=batch_size, temperature=temperature, relief_steps=relief_steps)
    load_s = time.perf_counter() - t0
    warm = True
    for entry in ref_entries:
        u_ref = load_reference(entry, max_frames)
        u_ca = ca_trace(u_ref)
        if warm:  # first call pays lazy initialisation; not counted
            u_ca.trajectory[0]
            bm.backmap_universe(u_ca, stop=1)
            warm = False
        t = time.perf_counter()
        u_gen = bm.backmap_universe(u_ca)
        seconds = time.perf_counter() - t
        yield entry, u_ref, u_gen, seconds, len(u_ca.trajectory), load_s


def _pulchra_frame(pulchra, ca_atoms, cache: Path, key: str):
    """Rebuild one frame with PULCHRA (cached): returns (rebuilt PDB path, seconds)."""
    out = cache / f"{key}.rebuilt.pdb"
    meta = cache / f"{key}.json"
    if out.exists() and meta.exists():
        return out, json.loads(meta.read_text())["seconds"]
    inp = cache / f"{key}.ca.pdb"
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        ca_atoms.write(str(inp))
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")   # scipy align_vectors warnings from PULCHRA's superpositions
        t = time.perf_counter()
        pulchra.reconstruct(str(inp), str(out))
        seconds = time.perf_counter() - t
    meta.write_text(json.dumps({"seconds": seconds, "when": datetime.now(timezone.utc).isoformat()}))
    inp.unlink()
    return out, seconds


def run_pulchra(ref_entries, max_frames, cache: Path):
    """PULCHRA (default settings) on a CA-only PDB per frame; yields like ``run_latcpb``."""
    import MDAnalysis as mda
    from MDAnalysis.coordinates.memory import MemoryReader
    from pulchra import Pulchra

    from latcpb.metrics import match_systems

    cache.mkdir(parents=True, exist_ok=True)
    pulchra = Pulchra()
    for entry in ref_entries:
        u_ref = load_reference(entry, max_frames)
        u_ca = ca_trace(u_ref)
        paths, seconds = [], 0.0
        for ts in u_ca.trajectory:
            digest = hashlib.sha1(np.round(u_ca.atoms.positions, 3).tobytes()
                                  + "".join(u_ca.atoms.resnames).encode()).hexdigest()[:16]
            path, s = _pulchra_frame(pulchra, u_ca.atoms, cache, f"{entry['name']}_{ts.frame:04d}_{digest}")
            paths.append(path)
            seconds += s
        u_gen = _frames_universe(paths, u_ref, entry, "pulchra")
        yield entry, u_ref, u_gen, seconds, len(paths), 0.0


def _frames_universe(paths, u_ref, entry, method, numbering=None):
    """One Universe of per-frame rebuilt PDBs (hydrogens dropped). A method may leave out side-chain atoms of a
    residue in some frames (PULCHRA does): the trajectory holds the atoms present in every frame, and the coverage
    is measured frame by frame (``per_frame_coverage``). ``numbering``: the CA AtomGroup given to the method, whose
    chain IDs and resids are put back on its residues (in order) where the method renumbered them (CGBack does)."""
    import MDAnalysis as mda
    from MDAnalysis.coordinates.memory import MemoryReader

    from latcpb.metrics import match_systems

    frames_u = [quiet_universe(p_) for p_ in paths]
    frames_u = [u.select_atoms("not (name H* or element H)") for u in frames_u]
    if numbering is not None:
        for u in frames_u:
            if len(u.residues) != len(numbering):
                raise RuntimeError(f"{method} on {entry['name']}: {len(u.residues)} residues out for "
                                   f"{len(numbering)} in")
            u.residues.resids = numbering.resids
            u.residues.segments.segids = [""] * len(u.residues.segments)
            order = {ix: k for k, ix in enumerate(u.residues.ix)}
            u.chainIDs = np.asarray(numbering.chainIDs)[[order[ix] for ix in u.resindices]]
    keys = [list(zip(u.chainIDs, u.resids, u.names)) for u in frames_u]
    common = set(keys[0]).intersection(*map(set, keys[1:]))
    order = [k for k in keys[0] if k in common]
    coords = []
    for u, k in zip(frames_u, keys):
        where = {key: i for i, key in enumerate(k)}
        coords.append(u.positions[[where[key] for key in order]])
    first = {key: i for i, key in enumerate(keys[0])}
    u_gen = mda.Merge(frames_u[0][[first[key] for key in order]])
    u_gen.load_new(np.stack(coords), format=MemoryReader)
    coverage = [match_systems(u_ref.atoms, u, ref_source=str(entry["pdb"]), gen_source=method).coverage
                for u in frames_u]
    u_gen.per_frame_coverage = float(np.mean(coverage))
    return u_gen


def cgback_available() -> bool:
    """True when the ``cgback`` command (PyPI ``cgback``) is on PATH."""
    return shutil.which("cgback") is not None


def run_cgback(ref_entries, frames_per_entry, cache: Path, threads: int = 1):
    """CGBack (its ``cgback`` command, default model M, CPU, seed 42, no energy minimisation) on a CA-only PDB of
    each of the first ``frames_per_entry`` frames; yields like ``run_latcpb`` (cached in ``cache``)."""
    import os

    cache.mkdir(parents=True, exist_ok=True)
    env = {**os.environ, "OMP_NUM_THREADS": str(threads), "MKL_NUM_THREADS": str(threads)}
    for entry in ref_entries:
        u_ref = load_reference(entry, frames_per_entry)
        u_ca = ca_trace(u_ref)
        paths, seconds = [], 0.0
        for ts in u_ca.trajectory:
            digest = hashlib.sha1(np.round(u_ca.atoms.positions, 3).tobytes()
                                  + "".join(u_ca.atoms.resnames).encode()).hexdigest()[:16]
            key = f"{entry['name']}_{ts.frame:04d}_{digest}"
            out, meta = cache / f"{key}.cgback.pdb", cache / f"{key}.json"
            if not (out.exists() and meta.exists()):
                inp = cache / f"{key}.ca.pdb"
                with warnings.catch_warnings():
                    warnings.simplefilter("ignore")
                    u_ca.atoms.write(str(inp))
                t = time.perf_counter()
                done = subprocess.run(["cgback", str(inp), "-o", str(out), "-d", "cpu"], env=env,
                                      capture_output=True, text=True)
                s_ = time.perf_counter() - t
                inp.unlink()
                if done.returncode != 0 or not out.exists():
                    raise RuntimeError(f"cgback failed on {entry['name']} frame {ts.frame}: "
                                       f"{(done.stderr or done.stdout).strip().splitlines()[-1:]}")
                meta.write_text(json.dumps({"seconds": s_, "when": datetime.now(timezone.utc).isoformat()}))
            paths.append(out)
            seconds += json.loads(meta.read_text())["seconds"]
        yield entry, u_ref, _frames_universe(paths, u_ref, entry, "cgback", u_ca.atoms), seconds, len(paths), 0.0


def score_method(name, runs, samples, out_dir: Path):
    """Evaluate each generated entry; write OUT/<name>/<entry>.json; return the per-entry summaries."""
    from latcpb.metrics import evaluate

    (out_dir / name).mkdir(parents=True, exist_ok=True)
    rows = []
    for entry, u_ref, u_gen, seconds, frames, load_s in runs:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            metrics = evaluate(u_ref, u_gen, samples=samples if name not in ("pulchra", "cgback") else 1,
                               ref_source=str(entry["pdb"]), gen_source=name)
        if hasattr(u_gen, "per_frame_coverage"):
            metrics["coverage_common_atoms"] = metrics["coverage"]
            metrics["coverage"] = u_gen.per_frame_coverage
        metrics["seconds"] = seconds
        metrics["seconds_per_frame"] = seconds / max(frames * metrics["samples"], 1)
        metrics["model_load_seconds"] = load_s
        (out_dir / name / f"{entry['name']}.json").write_text(json.dumps(metrics, indent=1))
        rows.append({"entry": entry["name"], "residues": metrics["n_residues"], "frames": frames, **{
            k: v for k, v in metrics.items() if k != "per_residue"}})
        print(f"  {name:<18} {entry['name']:<12} {frames:3d} frames  {seconds:8.2f} s  "
              f"angle outl. {metrics['angle_outlier_residue_pct']:.1f} %  overlaps/1000 "
              f"{metrics['overlap_per_1000_atoms']:.1f}  rot. outl. {metrics['rotamer_outlier_pct']:.1f} %  "
              f"RMSD {metrics['rmsd_heavy']:.3f} Å  GED {metrics['ged_signed']:.4f}  KL {metrics['torsion_kl']:.3f}",
              flush=True)
    return rows


def summarise(rows) -> dict:
    """Entry-mean of every scalar metric, total time, s/frame and frames/s, and ``pooled_kl_*``: each torsion's KL
    divergence between the histograms summed over every entry (all residues of the set pooled)."""
    from latcpb.metrics.torsions import kl_divergence

    keys = [k for k, v in rows[0].items() if isinstance(v, (int, float)) and not isinstance(v, bool)]
    out = {}
    for k in keys:
        vals = [r[k] for r in rows if r.get(k) is not None]
        out[k] = float(np.mean(vals)) if vals else None
    counted = [r["torsion_counts"] for r in rows if r.get("torsion_counts")]
    for k in (counted[0] if counted else {}):
        ref, gen = (np.sum([c[k][side] for c in counted], axis=0) for side in ("reference", "generated"))
        out[f"pooled_kl_{k}"] = float(kl_divergence(ref, gen))
    frames = sum(r["frames"] * r["samples"] for r in rows)
    seconds = sum(r["seconds"] for r in rows)
    out.update({"total_frames": frames, "total_seconds": seconds, "seconds_per_frame": seconds / frames,
                "frames_per_second": frames / seconds if seconds else None,
                "residue_frames_per_second": sum(r["frames"] * r["samples"] * r["residues"] for r in rows) / seconds
                if seconds else None, "entries": len(rows)})
    return out


def _fmt(v, spec):
    return "–" if v is None else format(v, spec)


def markdown(result: dict) -> str:
    """BENCHMARKS.md text of a benchmark result."""
    s = result["summary"]
    methods = list(s)
    lines = ["# LatCPB benchmarks", "",
             f"Generated by `bench/run_benchmark.py` on {result['date']}. Command:", "",
             f"```\n{result['command']}\n```", "",
             "Machine: " + ", ".join(f"{k} {v}" for k, v in result["machine"].items() if v is not None) + ".", "",
             f"Inputs: the CA atoms of every frame of every entry of `{result['data']}` "
             f"({len(result['entries'])} entries, {sum(e['frames'] for e in result['entries'])} frames, "
             f"{sum(e['residues'] for e in result['entries'])} residues in all). "
             f"Every method sees the same CA traces and is scored by `latcpb.metrics.evaluate` "
             "(definitions: DESIGN.md \"Metrics\"): atoms matched by chain, resid, residue and atom name; "
             "RMSD without superposition unless marked, terminal residues (first/last of each chain) excluded "
             "unless marked; values are means over frames, then over entries (each entry weighs the same).", "",
             "## Headline (mean over entries)", "",
             "| method | " + " | ".join(t for _, t, _ in HEADLINE) + " | s/frame | frames/s |",
             "|---|" + "---|" * (len(HEADLINE) + 2)]
    for m in methods:
        lines.append(f"| {m} | " + " | ".join(_fmt(s[m].get(k), f) for k, _, f in HEADLINE)
                     + f" | {_fmt(s[m]['seconds_per_frame'], '.3f')} | {_fmt(s[m]['frames_per_second'], '.2f')} |")
    if methods:  # the reference structures scored by the same validity metrics (frames of the first method)
        ref = s[methods[0]]
        lines.append("| reference | " + " | ".join(_fmt(ref.get(f"ref_{k}"), f) if k in VALIDITY_NAMES else "–"
                                                    for k, _, f in HEADLINE) + " | – | – |")
    lines += ["", "Validity columns (chain ends included; DESIGN.md \"Metrics\", `latcpb.metrics.validity`): % of "
              "residues with a bond angle > 4 sigma from Engh & Huber; severe overlaps (>= 0.4 Å of the probe vdW "
              "sum, pairs > 3 bonds apart; donor-acceptor pairs below 2.5 Å) per 1000 atoms and % of residues; "
              "rotamer and Ramachandran outliers (below the density level excluding 0.5 % of train); C-beta "
              "deviation > 0.25 Å; planar groups (peptides, rings, guanidinium, amides, carboxylates, C-termini) "
              "with RMS out-of-plane > 0.10 Å or omega > 30° from planar; D residues and non-Pro cis peptides."]
    singles = [e["name"] for e in result["entries"] if e["frames"] == 1]
    ensembles = [e for e in result["entries"] if e["frames"] > 1]
    lines += ["", "Lower is better everywhere except bond score (share of reference bonds within ±10 % of their "
              f"length). Torsion KL on a single structure ({len(singles)} of the {len(result['entries'])} entries) "
              "compares histograms of a few hundred angles and is noisy; the ensembles below are the meaningful KL "
              "figures (DESIGN.md: KL over all frames of an ensemble).", ""]
    if ensembles:
        per = {m: {r["entry"]: r for r in result["per_entry"][m]} for m in methods}
        keys = [("rmsd_heavy", "RMSD heavy"), ("ged_signed", "GED"), ("torsion_kl", "torsion KL"),
                ("kl_phi", "KL phi"), ("kl_psi", "KL psi"), ("kl_chi1", "KL chi1"), ("kl_chi2", "KL chi2"),
                ("clash_residue_pct", "clash res. %")]
        lines += ["## Ensembles", "", "| entry (frames) | method | " + " | ".join(t for _, t in keys) + " |",
                  "|---|---|" + "---|" * len(keys)]
        for e in ensembles:
            for m in methods:
                r = per[m].get(e["name"])
                if r:
                    lines.append(f"| {e['name']} ({e['frames']}) | {m} | "
                                 + " | ".join(_fmt(r.get(k), ".3f") for k, _ in keys) + " |")
        lines.append("")
    lines += [
"## More metrics (mean over entries)", "",
              "| method | " + " | ".join(t for _, t, _ in DETAIL) + " |", "|---|" + "---|" * len(DETAIL)]
    for m in methods:
        lines.append(f"| {m} | " + " | ".join(_fmt(s[m].get(k), f) for k, _, f in DETAIL) + " |")
    lines += ["", "## Per entry validity: angle-outlier residues (%) / severe overlaps per 1000 atoms / rotamer "
              "outliers (%)", "", "| entry | residues | frames | reference | " + " | ".join(methods) + " |",
              "|---|---|---|---|" + "---|" * len(methods)]
    per = {m: {r["entry"]: r for r in result["per_entry"][m]} for m in methods}
    vkeys = ("angle_outlier_residue_pct", "overlap_per_1000_atoms", "rotamer_outlier_pct")
    for e in result["entries"]:
        first = per[methods[0]].get(e["name"]) if methods else None
        cells = ["–" if first is None else " / ".join(_fmt(first.get(f"ref_{k}"), ".1f") for k in vkeys)]
        for m in methods:
            r = per[m].get(e["name"])
            cells.append("–" if r is None else " / ".join(_fmt(r.get(k), ".1f") for k in vkeys))
        lines.append(f"| {e['name']} | {e['residues']} | {e['frames']} | " + " | ".join(cells) + " |")
    lines += ["", "## Per entry: heavy-atom RMSD (Å, termini excluded) / torsion KL / s per frame", "",
              "| entry | residues | frames | " + " | ".join(methods) + " |", "|---|---|---|" + "---|" * len(methods)]
    per = {m: {r["entry"]: r for r in result["per_entry"][m]} for m in methods}
    for e in result["entries"]:
        cells = []
        for m in methods:
            r = per[m].get(e["name"])
            cells.append("–" if r is None else f"{_fmt(r['rmsd_heavy'], '.2f')} / {_fmt(r['torsion_kl'], '.2f')}"
                         f" / {_fmt(r['seconds_per_frame'], '.3g')}")
        lines.append(f"| {e['name']} | {e['residues']} | {e['frames']} | " + " | ".join(cells) + " |")
    lines += ["", "## Notes", "",
              "- PULCHRA is the PyPI `pulchra` package (a Python port of PULCHRA), run with its default settings "
              "(`Pulchra().reconstruct(ca.pdb, out.pdb)`, the same as the `pulchra ca.pdb` command), which include "
              "its CA optimisation: it may move CA atoms (up to 0.5 Å), which the CA RMSD column shows. Its "
              "timings are those of this Python port, much slower than the original C program.",
              "- PULCHRA sometimes leaves out the side-chain atoms of a residue in a frame; its coverage is the "
              "mean over frames, and the other metrics are computed on the atoms it produced in every frame of "
              "the entry.",
              "- LatCPB timings: `Backmapper.backmap_universe` on the in-memory CA Universe (model loading and one "
              "warm-up frame excluded; building the all-atom Universe included). PULCHRA timings: the "
              "`reconstruct` call per frame (reading and writing its small PDB files included).",
              "- CGBack (`--cgback`) is PyPI `cgback` 1.1.1 with its shipped weights, run as its `cgback ca.pdb -o "
              "out.pdb -d cpu` command (model M, 1 thread, no energy minimisation); being slow on CPU it rebuilds "
              "only the first `--cgback-frames` frames of each entry, so its ensemble figures cover those frames "
              "only. Its hydrogens are dropped before scoring.",
              "- Frames/s = all frames / all seconds over the whole set (dominated by the large entries).",
              "- `python bench/speed.py` measures speed and peak memory against system size and batch size "
              "(`bench/SPEED.md`)."]
    if result.get("notes"):
        lines += [f"- {n}" for n in result["notes"]]
    speed = result.get("speed")
    if speed:
        from speed import markdown as speed_markdown

        body = speed_markdown(speed).splitlines()[1:]
        lines += ["", "## Speed and peak memory against system size (`bench/speed.py`)", ""]
        lines += [("#" + ln) if ln.startswith("## ") else ln for ln in body]
    return "\n".join(lines) + "\n"


def main(argv=None):
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--data", type=Path, default=DEFAULT_DATA)
    p.add_argument("--out", type=Path, default=Path("bench/results"))
    p.add_argument("--models", nargs="*", default=["default", "geometric"],
                   help="LatCPB models: default (shipped), geometric, or checkpoint paths")
    p.add_argument("--pulchra", action=argparse.BooleanOptionalAction, default=True)
    p.add_argument("--cgback", action=argparse.BooleanOptionalAction, default=False,
                   help="also run CGBack (PyPI cgback; its `cgback` command must be on PATH)")
    p.add_argument("--cgback-frames", type=int, default=3, help="CGBack rebuilds the first N frames of each entry")
    p.add_argument("--entries", nargs="*", help="only these entries (names of INDEX.tsv)")
    p.add_argument("--max-frames", type=int, default=None, help="first N frames of each entry (default: all)")
    p.add_argument("--samples", type=int, default=1)
    p.add_argument("--temperatures", type=float, nargs="*", default=[],
                   help="also run every LatCPB model sampling at these temperatures (methods latcpb-T<t>), next to "
                        "its mode-seeking default")
    p.add_argument("--batch-size", type=int, default=32)
    p.add_argument("--device", default="cpu")
    p.add_argument("--threads", type=int, default=1, help="torch threads (1 is fastest on a shared machine)")
    p.add_argument("--relief-steps", type=int, default=None,
                   help="clash-relief steps of the LatCPB models (latcpb-backmap --relief-steps; model default)")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--markdown", type=Path, default=Path(__file__).resolve().parent / "BENCHMARKS.md")
    p.add_argument("--cache", type=Path, default=Path.home() / ".cache" / "latcpb-bench" / "pulchra",
                   help="PULCHRA output cache (keyed by CA coordinates; timings kept with them)")
    p.add_argument("--speed-json", type=Path, default=Path(__file__).resolve().parent / "results" / "speed.json",
                   help="results of bench/speed.py to include in the markdown (if the file exists)")
    p.add_argument("--note", action="append", default=[], help="a note for the markdown (repeatable)")
    p.add_argument("--reuse", nargs="*", default=[],
                   help="methods whose per-entry JSON in OUT is reused instead of rerun (e.g. pulchra)")
    args = p.parse_args(argv)

    import torch

    torch.set_num_threads(args.threads)
    ref_entries = entries(args.data, args.entries)
    if args.max_frames:
        for e in ref_entries:
            e["frames"] = min(e["frames"], args.max_frames)
    args.out.mkdir(parents=True, exist_ok=True)
    per_entry = {}
    methods = ([(_method_name(m, t), m, t) for m in args.models
                for t in [None, *(args.temperatures if m != "geometric" else [])]]
               + ([("pulchra", None, None)] if args.pulchra else [])
               + ([("cgback", None, None)] if args.cgback else []))
    if args.cgback and not cgback_available():
        p.error("--cgback: the `cgback` command is not on PATH (pip install --no-deps cgback==1.1.1; pip install rich)")
    for name, model, temperature in methods:
        print(f"{name}:", flush=True)
        if name in args.reuse:
            per_entry[name] = []
            for e in ref_entries:
                m = json.loads((args.out / name / f"{e['name']}.json").read_text())
                per_entry[name].append({"entry": e["name"], "residues": m["n_residues"],
                                        "frames": m.get("n_reference_frames", e["frames"]),
                                        **{k: v for k, v in m.items() if k != "per_residue"}})
            continue
        if name == "cgback":
            frames = min(args.cgback_frames, args.max_frames or args.cgback_frames)
            runs = run_cgback(ref_entries, frames, args.cache.parent / "cgback", args.threads)
        elif model is None:
            runs = run_pulchra(ref_entries, args.max_frames, args.cache)
        else:
            runs = run_latcpb(model, ref_entries, args.max_frames, args.samples, args.batch_size, args.device,
                              args.seed, temperature, args.relief_steps)
        per_entry[name] = score_method(name, runs, args.samples, args.out)
    notes = []
    if any(m in ("default", "latcpb") for m in args.models):
        from latcpb.model import SHIPPED_WEIGHTS

        w = Path(SHIPPED_WEIGHTS)
        if w.exists():
            digest = hashlib.sha1(w.read_bytes()).hexdigest()[:12]
            notes.append(f"`latcpb` = the default model: shipped weights `latcpb/weights/{w.name}` (sha1 {digest}, "
                         f"{w.stat().st_size / 1e6:.1f} MB); `latcpb-geometric` = the rule-based generator.")
        else:
            notes.append("`latcpb` = the default model; no shipped weights existed at run time, so it is the "
                         "rule-based geometric generator (same as `latcpb-geometric`).")
    for t in args.temperatures:
        notes.append(f"`latcpb-T{t:g}` = the same model drawing one sample per CG frame from its learned distribution "
                     f"(`--temperature {t:g}`, the ensemble setting) instead of the mode-seeking default.")
    notes += args.note
    result = {"date": datetime.now(timezone.utc).strftime("%Y-%m-%d %H:%M UTC"), "notes": notes,
              "command": "python " + " ".join(shlex.quote(a) for a in sys.argv),
              "machine": machine(), "data": str(args.data),
              "entries": [{"name": e["name"], "residues": e["residues"], "frames": e["frames"]} for e in ref_entries],
              "summary": {m: summarise(rows) for m, rows in per_entry.items()}, "per_entry": per_entry}
    (args.out / "benchmark.json").write_text(json.dumps(result, indent=1))
    if args.speed_json and args.speed_json.exists():
        result["speed"] = json.loads(args.speed_json.read_text())
    if args.markdown:
        args.markdown.write_text(markdown(result))
        args.markdown.with_suffix(".json").write_text(json.dumps(result, indent=1))
        print(f"wrote {args.markdown} and {args.markdown.with_suffix('.json')}")
    print(f"wrote {args.out / 'benchmark.json'}")


if __name__ == "__main__":
    main()
