"""Parallel backmapping benchmark: frames/s and peak memory per worker against the number of workers, for local
worker processes and a dask.distributed LocalCluster; scaling efficiency; the overhead of resume bookkeeping; and,
where CUDA is available, frames/s on the GPU at 100, 1,000 and 10,000 residues against batch size.

The input is a 2,000-frame CA trajectory of a validation entry (T0898, 161 residues by default): the entry's CA
trace plus 0.15 Å Gaussian noise per frame, times 10 ps apart and a 250 Å cubic box, written to bench/results/
(not committed). Each configuration runs ``latcpb.pipeline.runs.backmap_file`` on a warm engine (workers started
and their model loaded by a warm-up run first; the start-up time is reported apart). Peak memory per worker is
the largest resident set of each worker process (psutil, sampled every 0.1 s).

    python bench/parallel.py                                   # everything, 2,000 frames
    python bench/parallel.py --frames 400 --workers 1 2        # a reduced run on a busy machine
    python bench/parallel.py --gpu-only                        # only the CUDA section

Prints a table and writes bench/PARALLEL.json and bench/PARALLEL.md.
"""
from __future__ import annotations

import argparse
import json
import os
import sys
import tempfile
import threading
import time
import warnings
from datetime import datetime, timezone
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent))
from common import DEFAULT_DATA, machine, quiet_universe  # noqa: E402

HERE = Path(__file__).resolve().parent
NOISE_A = 0.15
DT_PS = 10.0
BOX_A = 250.0


def make_trajectory(entry: str, n_frames: int, data_dir: Path, out_dir: Path, seed: int = 0):
    """(cg.pdb, cg.xtc) of ``n_frames`` noisy copies of the entry's CA trace, with times and a box."""
    import MDAnalysis as mda

    out_dir.mkdir(parents=True, exist_ok=True)
    top, traj = out_dir / f"{entry}_ca.pdb", out_dir / f"{entry}_ca_{n_frames}.xtc"
    if top.exists() and traj.exists():
        return top, traj
    ref = quiet_universe(data_dir / f"{entry}.pdb")
    ca = mda.Merge(ref.select_atoms("protein and name CA"))
    rng = np.random.default_rng(seed)
    base = ca.atoms.positions.copy()
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        ca.dimensions = [BOX_A, BOX_A, BOX_A, 90, 90, 90]
        ca.atoms.write(str(top))
        with mda.Writer(str(traj), n_atoms=len(ca.atoms)) as w:
            ts = ca.trajectory.ts
            for k in range(n_frames):
                ca.atoms.positions = base + rng.normal(0, NOISE_A, base.shape)
                ts.time = k * DT_PS
                ts.dimensions = [BOX_A, BOX_A, BOX_A, 90, 90, 90]
                w.write(ca.atoms)
    return top, traj


class WorkerMemory:
    """Peak resident memory (MiB) of every descendant process of this one (or of this process, when it has none),
    sampled in a thread."""

    def __init__(self, period=0.1):
        import psutil

        self._me = psutil.Process()
        self.peaks: dict[int, float] = {}
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, args=(period,), daemon=True)

    def _run(self, period):
        import psutil

        while not self._stop.is_set():
            for proc in self._me.children(recursive=True):
                try:
                    rss = proc.memory_info().rss / 2 ** 20
                    cmd = " ".join(proc.cmdline())
                except (psutil.NoSuchProcess, psutil.AccessDenied):
                    continue
                if "resource_tracker" in cmd:
                    continue
                self.peaks[proc.pid] = max(self.peaks.get(proc.pid, 0.0), rss)
            self._stop.wait(period)

    def __enter__(self):
        self._thread.start()
        return self

    def __exit__(self, *exc):
        self._stop.set()
        self._thread.join()

    def worker_peaks(self, n_workers):
        """The ``n_workers`` largest peaks (the workers; dask nannies are small)."""
        return sorted(self.peaks.values(), reverse=True)[:n_workers]


def run_config(backend, n_workers, top, traj, frames, block_frames, model, out_dir, resumable=False):
    """One configuration on a warm engine: dict of start-up s, run s, frames/s, peak MiB per worker."""
    import resource

    from latcpb.pipeline.parallel import BlockEngine
    from latcpb.pipeline.runs import backmap_file

    options = dict(model=model, device="cpu", block_frames=block_frames, seed=1)
    with WorkerMemory() as memory:
        t0 = time.perf_counter()
        engine = BlockEngine(backend, n_workers=n_workers)
        try:
            warm = min(frames, 2 * block_frames * n_workers)  # two blocks per worker: every worker loads its model
            backmap_file(engine, quiet_universe(top, traj), str(out_dir / "warm.xtc"), stop=warm, resumable=False,
                         **options)
            startup = time.perf_counter() - t0
            t1 = time.perf_counter()
            result = backmap_file(engine, quiet_universe(top, traj), str(out_dir / "out.xtc"), stop=frames,
                                  resumable=resumable, **options)
            elapsed = time.perf_counter() - t1
        finally:
            engine.close()
    if backend == "serial":
        peaks = [resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024]
    else:
        peaks = memory.worker_peaks(n_workers)
    return {"backend": backend, "workers": n_workers, "frames": result.n_frames, "startup_s": round(startup, 2),
            "run_s": round(elapsed, 2), "frames_per_s": round(result.n_frames / elapsed, 2),
            "peak_mib_per_worker": round(max(peaks), 1) if peaks else None, "resumable": resumable}


def bookkeeping_cost(top, traj, block_frames, model, out_dir, repeats=8):
    """Seconds per block of the resume bookkeeping alone (save a block's .npz, check it, load it back), for a
    block of this input's size, against the seconds the engine spends computing one block (serial)."""
    from latcpb.pipeline.parallel import BlockEngine
    from latcpb.pipeline.resume import WorkFolder
    from latcpb.pipeline.runs import iter_block_results, make_spec
    from latcpb.pipeline.blocks import split_blocks

    u = quiet_universe(top, traj)
    spec, frames = make_spec(u, stop=block_frames, model=model, device="cpu", block_frames=block_frames)
    block = split_blocks(frames, block_frames)[0]
    with BlockEngine("serial") as engine:
        next(iter_block_results(engine, spec, [block]))  # model loaded
        t = time.perf_counter()
        result = next(iter_block_results(engine, spec, [block]))
        compute = time.perf_counter() - t
    work = WorkFolder(str(out_dir / "bookkeeping.latcpb-work"), {"bench": 1})
    t = time.perf_counter()
    for _ in range(repeats):
        work.save(result)
        assert work.is_done(block)
        work.load(block)
    per_block = (time.perf_counter() - t) / repeats
    work.remove()
    return {"block_frames": block_frames, "block_mib": round(result.positions.nbytes / 2 ** 20, 2),
            "bookkeeping_s_per_block": round(per_block, 4), "compute_s_per_block": round(compute, 2),
            "overhead": per_block / compute}


def gpu_section(entry, data_dir, sizes, batch_sizes, model, min_frames=64):
    """frames/s of ``Backmapper.backmap_coordinates`` on CUDA: CA traces of ``sizes`` residues (copies of the
    entry's chain side by side, one chain each) against batch size."""
    import MDAnalysis as mda
    import torch

    from latcpb.backmapper import Backmapper

    ref = quiet_universe(data_dir / f"{entry}.pdb")
    chain = ref.select_atoms("protein and name CA")
    rows = []
    for size in sizes:
        copies = int(np.ceil(size / len(chain)))
        parts = []
        for c in range(copies):
            part = mda.Merge(chain)
            part.atoms.positions = chain.positions + np.array([60.0 * (c % 20), 60.0 * (c // 20), 0.0])
            label = chr(ord("A") + c % 26) + (str(c // 26) if c >= 26 else "")
            part.add_TopologyAttr("chainIDs", [label[0]] * len(part.atoms))
            part.segments.segids = [label]
            parts.append(part.atoms)
        big = mda.Merge(*parts)
        beads = big.atoms[:size] if len(big.atoms) > size else big.atoms
        for batch in batch_sizes:
            try:
                bm = Backmapper(model=model, device="cuda", batch_size=batch, seed=1, note=lambda t: None)
                plan = bm.plan(bm.select(beads.universe.atoms[beads.ix], "name CA"), "gpu")
                n = max(min_frames, 3 * batch)
                ca = np.repeat(beads.positions[None], n, axis=0).astype(np.float32)
                bm.backmap_coordinates(plan, ca[:batch])  # warm-up (kernels, allocator)
                torch.cuda.synchronize()
                torch.cuda.reset_peak_memory_stats()
                t = time.perf_counter()
                bm.backmap_coordinates(plan, ca)
                torch.cuda.synchronize()
                elapsed = time.perf_counter() - t
                rows.append({"residues": len(beads), "batch_size": batch, "frames": n,
                             "frames_per_s": round(n / elapsed, 2),
                             "gpu_peak_gib": round(torch.cuda.max_memory_allocated() / 2 ** 30, 2)})
            except torch.cuda.OutOfMemoryError:
                rows.append({"residues": len(beads), "batch_size": batch, "error": "CUDA out of memory"})
            finally:
                torch.cuda.empty_cache()
            print(rows[-1], flush=True)
    return rows


def markdown(report) -> str:
    m = report["machine"]
    lines = ["# Parallel backmapping benchmark", "",
             f"Generated by `{report['command']}` on {report['date']} ({m.get('cpu')}, {m.get('cores')} cores,"
             f" load average {report['load_average']}). Input: {report['input']}.", ""]
    if report["cpu"]:
        lines += ["| backend | workers | frames | start-up s | run s | frames/s | peak MiB per worker |",
                  "|---|---|---|---|---|---|---|"]
        for r in report["cpu"]:
            lines.append(f"| {r['backend']} | {r['workers']} | {r['frames']} | {r['startup_s']} | {r['run_s']} |"
                         f" {r['frames_per_s']} | {r['peak_mib_per_worker']} |")
        lines.append("")
        for key, value in report["scaling"].items():
            lines.append(f"- scaling efficiency at 2 workers, {key}: **{value:.0%}** (goal >= 80 %)")
        if report.get("resume_overhead"):
            o = report["resume_overhead"]
            lines.append(f"- a whole run with resume bookkeeping (blocks saved to .npz as they are written),"
                         f" {o['backend']} x {o['workers']}: {o['plain_s']} s without, {o['resumable_s']} s with:"
                         f" {o['overhead']:+.1%}")
        if report.get("bookkeeping"):
            b = report["bookkeeping"]
            lines.append(f"- resume bookkeeping alone, per block of {b['block_frames']} frames ({b['block_mib']} MiB):"
                         f" save + check + load {b['bookkeeping_s_per_block']} s against"
                         f" {b['compute_s_per_block']} s to compute it: **{b['overhead']:.2%}**")
        lines.append("")
    if report["gpu"]:
        lines += ["| residues | batch size | frames | frames/s | GPU peak GiB |", "|---|---|---|---|---|"]
        for r in report["gpu"]:
            lines.append(f"| {r['residues']} | {r['batch_size']} | {r.get('frames', '')} |"
                         f" {r.get('frames_per_s', r.get('error'))} | {r.get('gpu_peak_gib', '')} |")
    else:
        lines.append("GPU section: not run (no CUDA device on the machine that ran this benchmark).")
    return "\n".join(lines) + "\n"


def main():
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--entry", default="T0898")
    parser.add_argument("--data", type=Path, default=DEFAULT_DATA)
    parser.add_argument("--frames", type=int, default=2000)
    parser.add_argument("--workers", type=int, nargs="+", default=[1, 2, 4])
    parser.add_argument("--backends", nargs="+", default=["multiprocessing", "dask"])
    parser.add_argument("--block-frames", type=int, default=64)
    parser.add_argument("--model", default=None, help="default: the shipped model")
    parser.add_argument("--gpu-only", action="store_true")
    parser.add_argument("--gpu-sizes", type=int, nargs="+", default=[100, 1000, 10000])
    parser.add_argument("--gpu-batch-sizes", type=int, nargs="+", default=[1, 8, 32, 128])
    parser.add_argument("--json", type=Path, default=HERE / "PARALLEL.json")
    parser.add_argument("--md", type=Path, default=HERE / "PARALLEL.md")
    args = parser.parse_args()
    import torch

    report = {"command": "python bench/parallel.py " + " ".join(sys.argv[1:]),
              "date": datetime.now(timezone.utc).strftime("%Y-%m-%d %H:%M UTC"), "machine": machine(),
              "cpu": [], "scaling": {}, "resume_overhead": None, "gpu": []}
    load = [round(os.getloadavg()[0], 2)]
    if not args.gpu_only:
        top, traj = make_trajectory(args.entry, args.frames, args.data, HERE / "results" / "parallel")
        n_res = len(quiet_universe(top).atoms)
        report["input"] = f"{args.entry} CA trace ({n_res} residues), {args.frames} frames, block {args.block_frames}"
        with tempfile.TemporaryDirectory() as tmp:
            runs = [("serial", 1)] + [(b, n) for b in args.backends for n in args.workers]
            resume_at = ("multiprocessing", 2) if ("multiprocessing", 2) in runs else ("serial", 1)
            for backend, n in runs:
                row = run_config(backend, n, top, traj, args.frames, args.block_frames, args.model, Path(tmp))
                report["cpu"].append(row)
                print(row, flush=True)
                if (backend, n) == resume_at:  # right after the plain run, before other engines load the machine
                    resumable = run_config(backend, n, top, traj, args.frames, args.block_frames, args.model,
                                           Path(tmp), resumable=True)
                    report["resume_overhead"] = {"backend": backend, "workers": n, "plain_s": row["run_s"],
                                                 "resumable_s": resumable["run_s"],
                                                 "overhead": resumable["run_s"] / row["run_s"] - 1}
            for backend in args.backends:
                fps = {r["workers"]: r["frames_per_s"] for r in report["cpu"] if r["backend"] == backend}
                if 1 in fps and 2 in fps:
                    report["scaling"][backend] = fps[2] / (2 * fps[1])
            report["bookkeeping"] = bookkeeping_cost(top, traj, args.block_frames, args.model, Path(tmp))
            print(report["bookkeeping"], flush=True)
    else:
        report["input"] = f"{args.entry} CA trace copies"
    if torch.cuda.is_available():
        report["gpu"] = gpu_section(args.entry, args.data, args.gpu_sizes, args.gpu_batch_sizes, args.model)
    load.append(round(os.getloadavg()[0], 2))
    report["load_average"] = f"{load[0]} at start, {load[-1]} at end"
    text = markdown(report)
    print(text)
    args.json.write_text(json.dumps(report, indent=1))
    args.md.write_text(text)


if __name__ == "__main__":
    main()
