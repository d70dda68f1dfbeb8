"""Speed and peak memory of LatCPB against system size, batch size and number of frames.

    nice -n 10 python bench/speed.py                      # CPU, models default + geometric, writes bench/SPEED.md
    python bench/speed.py --device cuda --threads 4        # on a GPU machine

Every (model, residues, batch size) case runs in a fresh subprocess (``--worker``) so that its peak resident memory
(``resource.getrusage(RUSAGE_SELF).ru_maxrss``, which sees torch's allocations, unlike tracemalloc) is its own.
Systems are real CA traces: the validation structures laid side by side as separate chains and cut to N residues.
Each case times ``Backmapper.backmap_coordinates`` on batches of B frames (one batch per call) until
``--min-seconds`` have passed; a second study times ``backmap_universe`` end to end for 1..64 frames.
"""
from __future__ import annotations

import argparse
import json
import os
import resource
import subprocess
import sys
import time
from datetime import datetime, timezone
from pathlib import Path

import numpy as np

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE))
from common import DEFAULT_DATA, entries, machine, quiet_universe  # noqa: E402


def build_system(n_residues: int, data_dir: Path = DEFAULT_DATA):
    """CA-only Universe of ``n_residues`` real residues: validation structures (first frame) as chains A, B, ...,
    100 Å apart, the last one cut (no chain shorter than 2 residues)."""
    import MDAnalysis as mda

    from latcpb.data.featurize import standard_residue_cas

    pieces, total = [], 0
    for k, e in enumerate(sorted(entries(data_dir), key=lambda e: -e["residues"])):
        if total >= n_residues:
            break
        ca = standard_residue_cas(quiet_universe(e["pdb"]).atoms)
        take = min(len(ca), n_residues - total)
        if take < 2:
            continue
        if 0 < len(ca) - take < 2 or n_residues - total - take == 1:
            take = max(2, take - 2)
        pieces.append((ca[:take], k))
        total += take
    if total < n_residues:
        raise ValueError(f"validation set too small for {n_residues} residues")
    n = total
    u = mda.Universe.empty(n, n_residues=n, n_segments=1, atom_resindex=np.arange(n), trajectory=True)
    u.add_TopologyAttr("names", ["CA"] * n)
    u.add_TopologyAttr("resnames", np.concatenate([p.resnames for p, _ in pieces]))
    u.add_TopologyAttr("resids", np.concatenate([p.resids for p, _ in pieces]))
    chains = np.concatenate([[chr(ord("A") + i)] * len(p) for i, (p, _) in enumerate(pieces)])
    u.add_TopologyAttr("chainIDs", chains)
    u.add_TopologyAttr("elements", ["C"] * n)
    u.add_TopologyAttr("segids", ["A"])
    xyz = np.concatenate([p.positions - p.positions.mean(0) + [100.0 * i, 0, 0] for i, (p, _) in enumerate(pieces)])
    u.atoms.positions = xyz
    return u


def _rss_mb() -> float:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024.0


def worker(args) -> dict:
    """One case in this process: returns timings and peak memory."""
    import torch

    import latcpb

    torch.set_num_threads(args.threads)
    u = build_system(args.residues, args.data)
    rng = np.random.default_rng(0)
    base = u.atoms.positions.astype(np.float32)
    t = time.perf_counter()
    bm = latcpb.Backmapper(model=None if args.model == "default" else args.model, device=args.device,
                           batch_size=args.batch_size, seed=0, relief_steps=args.relief_steps)
    plan = bm.plan(u.atoms, source=f"{args.residues} residues")
    load_s = time.perf_counter() - t
    out = {"model": args.model, "residues": args.residues, "batch_size": args.batch_size, "device": args.device,
           "threads": args.threads, "atoms": plan.n_atoms, "load_seconds": load_s, "rss_after_load_mb": _rss_mb()}
    cuda = args.device.startswith("cuda")

    def frames(k):
        return base[None] + rng.normal(0, 0.05, (k,) + base.shape).astype(np.float32)

    def sync():
        if cuda:
            torch.cuda.synchronize()

    if args.mode == "batch":
        ca = frames(args.batch_size)
        bm.backmap_coordinates(plan, ca[:1])   # warm-up
        sync()
        if cuda:
            torch.cuda.reset_peak_memory_stats()
        calls, t0 = 0, time.perf_counter()
        while True:
            xyz = bm.backmap_coordinates(plan, ca)
            sync()
            calls += 1
            elapsed = time.perf_counter() - t0
            if elapsed >= args.min_seconds or calls >= args.max_calls:
                break
        assert xyz.shape == (args.batch_size, plan.n_atoms, 3) and np.isfinite(xyz).all()
        out.update({"calls": calls, "seconds": elapsed, "frames_per_second": calls * args.batch_size / elapsed,
                    "seconds_per_frame": elapsed / (calls * args.batch_size)})
    else:  # end-to-end backmap_universe for several frame counts
        from MDAnalysis.coordinates.memory import MemoryReader

        import MDAnalysis as mda

        out["frame_counts"] = {}
        u_warm = mda.Merge(u.atoms)
        bm.backmap_universe(u_warm)
        for f in args.frame_counts:
            uf = mda.Merge(u.atoms)
            uf.load_new(frames(f), format=MemoryReader)
            t0 = time.perf_counter()
            u_aa = bm.backmap_universe(uf)
            sync()
            out["frame_counts"][str(f)] = time.perf_counter() - t0
            assert len(u_aa.trajectory) == f
    out["peak_rss_mb"] = _rss_mb()
    if cuda:
        out["cuda_peak_allocated_mb"] = torch.cuda.max_memory_allocated() / 1024 ** 2
    return out


def run_case(args, model, residues, batch, mode="batch") -> dict:
    cmd = [sys.executable, str(Path(__file__).resolve()), "--worker", "--model", model, "--residues", str(residues),
           "--batch-size", str(batch), "--device", args.device, "--threads", str(args.threads),
           "--min-seconds", str(args.min_seconds), "--max-calls", str(args.max_calls), "--mode", mode,
           "--data", str(args.data), "--frame-counts", *map(str, args.frame_counts)]
    if args.relief_steps is not None:
        cmd += ["--relief-steps", str(args.relief_steps)]
    t = time.perf_counter()
    try:
        p = subprocess.run(cmd, capture_output=True, text=True, timeout=args.timeout)
    except subprocess.TimeoutExpired:
        return {"model": model, "residues": residues, "batch_size": batch, "error": f"timeout {args.timeout} s"}
    if p.returncode != 0:
        tail = (p.stderr.strip().splitlines() or ["?"])[-1]
        return {"model": model, "residues": residues, "batch_size": batch, "error": tail}
    res = json.loads(p.stdout.strip().splitlines()[-1])
    res["wall_seconds"] = time.perf_counter() - t
    return res


def _slope(x, y):
    """Exponent a of y ~ x^a (least squares in log-log)."""
    x, y = np.asarray(x, float), np.asarray(y, float)
    ok = np.isfinite(y) & (y > 0)
    return float(np.polyfit(np.log(x[ok]), np.log(y[ok]), 1)[0]) if ok.sum() >= 2 else None


def markdown(result) -> str:
    lines = ["# LatCPB speed and memory", "", f"Generated by `bench/speed.py` on {result['date']}. Command:", "",
             f"```\n{result['command']}\n```", "",
             "Machine: " + ", ".join(f"{k} {v}" for k, v in result["machine"].items() if v is not None) + ".", "",
             "Each case is a fresh process; frames/s = frames backmapped by `Backmapper.backmap_coordinates` "
             "(B frames per call, after one warm-up call) / seconds; peak memory = `ru_maxrss` of the process "
             "(Python, torch, MDAnalysis and the model included; 'after load' = after imports, model load and "
             "planning)."]
    for model, cases in result["cases"].items():
        batches = sorted({c["batch_size"] for c in cases})
        sizes = sorted({c["residues"] for c in cases})
        lookup = {(c["residues"], c["batch_size"]): c for c in cases}
        lines += ["", f"## {model}: frames/s (peak RSS MB)", "",
                  "| residues | heavy atoms | " + " | ".join(f"batch {b}" for b in batches) + " |",
                  "|---|---|" + "---|" * len(batches)]
        for n in sizes:
            cells, atoms = [], "–"
            for b in batches:
                c = lookup.get((n, b), {})
                if "error" in c or not c:
                    cells.append(c.get("error", "–"))
                else:
                    atoms = c["atoms"]
                    mem = f"{c['peak_rss_mb']:.0f}"
                    if "cuda_peak_allocated_mb" in c:
                        mem += f", GPU {c['cuda_peak_allocated_mb']:.0f}"
                    cells.append(f"{c['frames_per_second']:.2f} ({mem})")
            lines.append(f"| {n} | {atoms} | " + " | ".join(cells) + " |")
        sc = result["scaling"].get(model, {})
        if sc:
            lines += ["", "Growth with residues (s/frame ~ residues^a): " + ", ".join(
                f"batch {b}: a = {a:.2f}" for b, a in sc.get("residue_exponent", {}).items() if a is not None) + "."]
            fc = sc.get("frames")
            if fc:
                lines += ["", f"End-to-end `backmap_universe` at {fc['residues']} residues (batch "
                          f"{fc['batch_size']}): " + ", ".join(f"{f} frames {s:.2f} s"
                                                             for f, s in fc["seconds"].items())
                          + f"; fit t = {fc['fixed_seconds']:.3f} s + {fc['seconds_per_frame']:.4f} s x frames."]
    lines += [""] + [f"- {n}" for n in result.get("notes", [])]
    return "\n".join(lines) + "\n"


def main(argv=None):
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--models", nargs="+", default=["default", "geometric"])
    p.add_argument("--residues-list", nargs="+", type=int, default=[50, 100, 200, 500, 1000])
    p.add_argument("--batch-sizes", nargs="+", type=int, default=[1, 4, 16, 64])
    p.add_argument("--frame-counts", nargs="+", type=int, default=[1, 4, 16, 64])
    p.add_argument("--frames-residues", type=int, default=100, help="system size of the frame-count study")
    p.add_argument("--device", default="cpu")
    p.add_argument("--threads", type=int, default=1)
    p.add_argument("--relief-steps", type=int, default=None, help="clash-relief steps (model default when omitted)")
    p.add_argument("--min-seconds", type=float, default=2.0)
    p.add_argument("--max-calls", type=int, default=20)
    p.add_argument("--timeout", type=float, default=300.0, help="per case (s)")
    p.add_argument("--data", type=Path, default=DEFAULT_DATA)
    p.add_argument("--out", type=Path, default=HERE / "results" / "speed.json")
    p.add_argument("--markdown", type=Path, default=HERE / "SPEED.md")
    # worker mode
    p.add_argument("--worker", action="store_true", help=argparse.SUPPRESS)
    p.add_argument("--model", default="default", help=argparse.SUPPRESS)
    p.add_argument("--residues", type=int, default=100, help=argparse.SUPPRESS)
    p.add_argument("--batch-size", type=int, default=1, help=argparse.SUPPRESS)
    p.add_argument("--mode", default="batch", choices=["batch", "frames"], help=argparse.SUPPRESS)
    args = p.parse_args(argv)
    if args.worker:
        import warnings

        warnings.simplefilter("ignore")
        print(json.dumps(worker(args)))
        return
    notes = []
    from latcpb.model import SHIPPED_WEIGHTS

    if "default" in args.models and not Path(SHIPPED_WEIGHTS).exists():
        notes.append("No shipped weights existed at run time: the default model was the geometric generator.")
        if "geometric" in args.models:
            args.models = [m for m in args.models if m != "default"]
    cases, scaling = {}, {}
    for model in args.models:
        cases[model] = []
        for n in args.residues_list:
            for b in args.batch_sizes:
                c = run_case(args, model, n, b)
                cases[model].append(c)
                print(json.dumps(c), flush=True)
        sc = {"residue_exponent": {}}
        for b in args.batch_sizes:
            rows = [c for c in cases[model] if c["batch_size"] == b and "error" not in c]
            sc["residue_exponent"][str(b)] = _slope([c["residues"] for c in rows],
                                                    [c["seconds_per_frame"] for c in rows])
        fb = max(args.batch_sizes)
        fr = run_case(args, model, args.frames_residues, fb, mode="frames")
        print(json.dumps(fr), flush=True)
        if "error" not in fr:
            f = np.array([int(k) for k in fr["frame_counts"]], float)
            s = np.array(list(fr["frame_counts"].values()))
            slope, intercept = np.polyfit(f, s, 1)
            sc["frames"] = {"residues": args.frames_residues, "batch_size": fb, "seconds": fr["frame_counts"],
                            "seconds_per_frame": float(slope), "fixed_seconds": float(intercept)}
        scaling[model] = sc
    result = {"date": datetime.now(timezone.utc).strftime("%Y-%m-%d %H:%M UTC"),
              "command": "python " + " ".join(sys.argv), "machine": machine(), "cases": cases, "scaling": scaling,
              "notes": notes}
    result["machine"]["torch_threads"] = args.threads
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(result, indent=1))
    if args.markdown:
        args.markdown.write_text(markdown(result))
    print(f"wrote {args.out} and {args.markdown}")


if __name__ == "__main__":
    os.environ.setdefault("PYTHONWARNINGS", "ignore")
    main()
