"""Streaming benchmark of ``latcpb-backmap``: peak memory and speed on CA trajectories of growing length.

A CA trace of a ~100-residue validation entry (T0869, 104 residues) is turned into XTC trajectories of 1k, 10k
and 100k frames (the reference frame plus Gaussian noise, written in chunks so the generator never holds the
trajectory in memory). Each size is backmapped by a fresh ``latcpb-backmap`` subprocess; its peak resident
memory comes from the kernel's accounting of that child (``os.wait4``, the per-child form of
``getrusage(RUSAGE_CHILDREN).ru_maxrss``), its speed from the wall time. Streaming means the peak RSS stays flat
as the trajectory grows.

    python bench/streaming_memory.py --sizes 1000,10000 --json /tmp/streaming.json
    nice -n 10 python bench/streaming_memory.py --sizes 100000 --workdir /tmp/stream100k

Prints a table and writes JSON. ``--keep`` keeps the generated inputs and outputs (default: deleted).
"""
from __future__ import annotations

import argparse
import json
import os
import shutil
import subprocess
import sys
import tempfile
import time
import warnings
from datetime import datetime, timezone
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent))
from common import DEFAULT_DATA, machine  # noqa: E402

CHUNK = 1000          # frames generated and written at a time
NOISE_A = 0.15        # Å, per-coordinate Gaussian noise added to the reference CA trace


def make_ca_trajectory(pdb: Path, workdir: Path, n_frames: int, seed: int = 0) -> tuple[Path, Path]:
    """cg.pdb (CA beads) and cg_<n>.xtc with ``n_frames`` noisy copies of the trace, written chunk by chunk."""
    import MDAnalysis as mda

    from latcpb.data.featurize import standard_residue_cas

    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        u = mda.Universe(str(pdb))
        ca = standard_residue_cas(u.atoms)
        cg = mda.Merge(ca)
        top = workdir / "cg.pdb"
        cg.atoms.write(str(top))
        traj = workdir / f"cg_{n_frames}.xtc"
        base = ca.positions.astype(np.float64)
        rng = np.random.default_rng(seed)
        with mda.Writer(str(traj), n_atoms=len(ca)) as writer:
            for start in range(0, n_frames, CHUNK):
                n = min(CHUNK, n_frames - start)
                chunk = base[None] + rng.normal(scale=NOISE_A, size=(n, *base.shape))
                for frame in chunk:
                    cg.atoms.positions = frame
                    writer.write(cg.atoms)
    return top, traj


def run_backmap(top: Path, traj: Path, out: Path, model: str | None, batch_size: int) -> dict:
    """One fresh ``latcpb-backmap`` process; its peak RSS (MB), wall time (s), frames/s and exit code."""
    exe = shutil.which("latcpb-backmap")
    cmd = [exe] if exe else [sys.executable, "-m", "latcpb.cli.backmap"]
    cmd += [str(traj), "--top", str(top), "-o", str(out), "--quiet", "--batch-size", str(batch_size)]
    if model:
        cmd += ["--model", model]
    err_path = out.with_suffix(".stderr.txt")
    t0 = time.perf_counter()
    with open(err_path, "wb") as err:
        proc = subprocess.Popen(cmd, stdout=subprocess.DEVNULL, stderr=err)
        _, status, usage = os.wait4(proc.pid, 0)
    wall = time.perf_counter() - t0
    proc.returncode = os.waitstatus_to_exitcode(status)
    stderr = err_path.read_text(errors="replace").strip()
    return {"command": " ".join(cmd), "exit_code": proc.returncode, "wall_s": round(wall, 2),
            "peak_rss_mb": round(usage.ru_maxrss / 1024, 1), "stderr_tail": stderr[-400:]}


def count_frames(path: Path) -> int:
    import MDAnalysis as mda

    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        top = path.with_suffix(".pdb")
        return len(mda.Universe(str(top), str(path)).trajectory)


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--sizes", default="1000,10000,100000", help="comma-separated frame counts")
    parser.add_argument("--entry", default=str(DEFAULT_DATA / "T0869.pdb"), help="all-atom PDB giving the CA trace")
    parser.add_argument("--models", default=None,
                        help="comma-separated --model values (default: geometric, plus the shipped model if present)")
    parser.add_argument("--batch-size", type=int, default=32)
    parser.add_argument("--workdir", default=None, help="where inputs/outputs go (default: a temporary directory)")
    parser.add_argument("--json", default=None, help="result file (default: $TMPDIR/latcpb_streaming_memory.json)")
    parser.add_argument("--keep", action="store_true", help="keep the generated trajectories and outputs")
    args = parser.parse_args(argv)

    from latcpb.model.generator import shipped_weights_path

    sizes = [int(s) for s in args.sizes.split(",") if s.strip()]
    if args.models:
        models = [m.strip() for m in args.models.split(",") if m.strip()]
    else:
        models = ["geometric"] + (["latcpb"] if shipped_weights_path() else [])
    workdir = Path(args.workdir or tempfile.mkdtemp(prefix="latcpb_stream_"))
    workdir.mkdir(parents=True, exist_ok=True)
    json_path = Path(args.json) if args.json else Path(tempfile.gettempdir()) / "latcpb_streaming_memory.json"
    rows = []
    print(f"{'model':<10} {'frames':>8} {'residues':>8} {'atoms':>6} {'peak RSS MB':>11} {'wall s':>8}"
          f" {'frames/s':>9} {'exit':>4}", flush=True)
    try:
        for n in sizes:
            top, traj = make_ca_trajectory(Path(args.entry), workdir, n)
            n_res = sum(1 for line in open(top) if line.startswith("ATOM"))
            for model in models:
                out = workdir / f"aa_{model}_{n}.xtc"
                row = run_backmap(top, traj, out, model, args.batch_size)
                row.update({"model": model, "frames": n, "residues": n_res,
                            "frames_per_s": round(n / row["wall_s"], 1)})
                if row["exit_code"] == 0:
                    row["output_frames"] = count_frames(out)
                    import MDAnalysis as mda
                    with warnings.catch_warnings():
                        warnings.simplefilter("ignore")
                        row["atoms"] = len(mda.Universe(str(out.with_suffix(".pdb"))).atoms)
                    row["output_mb"] = round(out.stat().st_size / 2 ** 20, 1)
                rows.append(row)
                print(f"{model:<10} {n:>8} {n_res:>8} {row.get('atoms', '-'):>6} {row['peak_rss_mb']:>11.1f}"
                      f" {row['wall_s']:>8.1f} {row['frames_per_s']:>9.1f} {row['exit_code']:>4}", flush=True)
                if not args.keep:
                    for p in (out, out.with_suffix(".pdb")):
                        p.unlink(missing_ok=True)
            if not args.keep:
                traj.unlink(missing_ok=True)
                for p in workdir.glob(f".{traj.name}_offsets.*"):
                    p.unlink()
            result = {"benchmark": "streaming_memory", "date": datetime.now(timezone.utc).isoformat(timespec="seconds"),
                      "entry": args.entry, "noise_A": NOISE_A, "batch_size": args.batch_size, "machine": machine(),
                      "rows": rows}
            json_path.write_text(json.dumps(result, indent=2))
    finally:
        if not args.keep and not args.workdir:
            shutil.rmtree(workdir, ignore_errors=True)
    print(f"wrote {json_path}" if json_path.exists() else "no results written", flush=True)
    return 0 if all(r["exit_code"] == 0 for r in rows) else 1


if __name__ == "__main__":
    sys.exit(main())
