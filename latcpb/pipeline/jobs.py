"""The inputs of one ``latcpb-backmap`` call: one output per CG input (``-o`` or ``-O OUTDIR`` / a manifest),
the engine that ``--workers`` / ``--scheduler`` ask for, and the loop that reports each bad input and goes on."""
from __future__ import annotations

import os
from typing import Callable

from latcpb.errors import LatcpbInputError
from latcpb.pipeline.parallel import BlockEngine
from latcpb.pipeline.runs import RunResult, backmap_inputs

WRITABLE_EXTENSIONS = ("xtc", "trr", "dcd", "pdb", "nc", "ncdf", "xyz", "gro")
DEFAULT_TRAJECTORY_EXTENSION = "xtc"


def read_manifest(path: str, default_topology: str | None = None) -> list[tuple[str | None, str]]:
    """(topology or None, CG input) per line of a manifest: ``INPUT [TOPOLOGY]``, blank lines and ``#`` comments
    ignored, relative paths taken from the manifest's folder; a line without topology uses ``default_topology``."""
    if not os.path.isfile(path):
        raise LatcpbInputError(f"--manifest {path}: no such file")
    base = os.path.dirname(os.path.abspath(path))
    pairs = []
    with open(path, encoding="utf-8") as fh:
        for number, line in enumerate(fh, 1):
            fields = line.split("#", 1)[0].split()
            if not fields:
                continue
            if len(fields) > 2:
                raise LatcpbInputError(f"--manifest {path}: line {number}: expected 'INPUT [TOPOLOGY]', got"
                                       f" {len(fields)} fields")
            resolve = (lambda p: p if os.path.isabs(p) else os.path.join(base, p))  # noqa: E731
            topology = resolve(fields[1]) if len(fields) == 2 else default_topology
            pairs.append((topology, resolve(fields[0])))
    if not pairs:
        raise LatcpbInputError(f"--manifest {path}: lists no inputs")
    return pairs


def output_name(cg_input: str, output_dir: str) -> str:
    """``OUTDIR/<input stem>.<ext>``: the input's extension where LatCPB writes it, else xtc."""
    stem, ext = os.path.splitext(os.path.basename(cg_input))
    ext = ext.lower().lstrip(".")
    return os.path.join(output_dir, f"{stem}.{ext if ext in WRITABLE_EXTENSIONS else DEFAULT_TRAJECTORY_EXTENSION}")


def make_jobs(cg_inputs, topology=None, output=None, output_dir=None, manifest=None):
    """[(topology, trajectory or None, output)] for the CLI's inputs.

    One input with ``-o OUTPUT``; any number with ``-O OUTDIR`` (outputs named after the inputs) and/or a manifest.
    With ``--top`` every input is a trajectory of that topology; without, every input is a structure (or a
    topology with its coordinates).
    """
    pairs = [(topology, p) for p in cg_inputs]
    if manifest is not None:
        pairs += read_manifest(manifest, topology)
    if not pairs:
        raise LatcpbInputError("no input: give CG_TRAJ_OR_STRUCTURE (one or more) or --manifest FILE")
    if output is not None and output_dir is not None:
        raise LatcpbInputError("-o and -O: give one output file (-o) or an output folder (-O), not both")
    if output_dir is None:
        if output is None:
            raise LatcpbInputError("no output: give -o OUTPUT (one input) or -O OUTDIR (one output per input)")
        if len(pairs) > 1:
            raise LatcpbInputError(f"-o {output}: {len(pairs)} inputs need -O OUTDIR (one output per input)")
        top, traj = pairs[0]
        return [(top, traj, output) if top else (traj, None, output)]
    if not os.path.isdir(output_dir):
        raise LatcpbInputError(f"-O {output_dir}: no such folder")
    jobs, seen = [], {}
    for top, traj in pairs:
        out = output_name(traj, output_dir)
        if out in seen:
            raise LatcpbInputError(f"-O {output_dir}: {seen[out]} and {traj} would both be written to {out};"
                                   " rename one or run them separately")
        seen[out] = traj
        jobs.append((top, traj, out) if top else (traj, None, out))
    return jobs


def make_engine(workers: int | None = None, scheduler: str | None = None) -> BlockEngine:
    """``--scheduler ADDRESS``: the running dask.distributed cluster there; ``--workers N`` > 1: N local
    single-threaded worker processes; else this process."""
    if scheduler is not None:
        if workers is not None:
            raise LatcpbInputError("--workers and --scheduler: the cluster's workers are used; give one of them")
        return BlockEngine.connect(scheduler)
    if workers is not None and workers < 1:
        raise LatcpbInputError(f"--workers {workers}: must be at least 1")
    return BlockEngine("serial" if (workers or 1) == 1 else "multiprocessing", n_workers=workers)


def run_jobs(jobs, engine: BlockEngine, fail_fast=False, report: Callable[[RunResult], None] | None = None,
             **options) -> list[RunResult]:
    """Backmap every job on ``engine`` (``latcpb.pipeline.runs.backmap_file`` options); raises
    ``LatcpbInputError`` naming the failed inputs after all ran (at the first with ``fail_fast``)."""
    results = backmap_inputs(engine, jobs, fail_fast=fail_fast, on_done=report, **options)
    failed = [r for r in results if r.error is not None]
    if failed and len(results) > 1:
        names = ", ".join(r.source for r in failed[:5]) + (" ..." if len(failed) > 5 else "")
        raise LatcpbInputError(f"{len(failed)} of {len(results)} inputs failed ({names}); the others were written")
    if failed:
        raise failed[0].error
    return results


def run_cli(cg_inputs, *, topology=None, output=None, output_dir=None, manifest=None, workers=None,
            scheduler=None, fail_fast=False, quiet=False, echo: Callable[[str], None] = print,
            note: Callable[[str], None] | None = None, relax: dict | None = None, report=None,
            **options) -> list[RunResult]:
    """What ``latcpb-backmap`` does with its inputs: check every output path first, then backmap the inputs on
    one engine, printing one line per output written and one error line per failed input (several inputs).

    options: ``backmap_file``'s (select, start, stop, step, seed, block_frames, resume, work_dir, keep_work)
    and ``Backmapper``'s. Raises ``LatcpbInputError`` when an input failed (after the others ran).
    """
    from latcpb.io.trajectory_writer import check_output_path, topology_path_for

    jobs = make_jobs(cg_inputs, topology, output, output_dir, manifest)
    for _, _, out in jobs:
        check_output_path(out)
        if topology_path_for(out):
            check_output_path(topology_path_for(out))
    if relax is not None:
        from latcpb.pipeline.relax_stage import openmm_plugin
        openmm_plugin()
    if report is not None and len(jobs) > 1:
        raise LatcpbInputError(f"--report {report}: with several inputs every output gets OUTPUT.relax.json")
    several = len(jobs) > 1

    def done(result: RunResult):
        if result.error is not None:
            if several:
                err = result.error
                text = str(err) if isinstance(err, LatcpbInputError) else f"{type(err).__name__}: {err}"
                echo(f"latcpb-backmap: error: {text.strip().splitlines()[0] if text.strip() else type(err).__name__}")
        elif not quiet:
            extra = f" and {result.topology_output}" if result.topology_output else ""
            echo(f"wrote {result.n_frames} frames of {result.n_atoms} atoms to {result.output}{extra}")

    with make_engine(workers, scheduler) as engine:
        return run_jobs(jobs, engine, fail_fast=fail_fast, report=done, progress=not quiet, note=note,
                        relax=relax, report_path=report, **options)
