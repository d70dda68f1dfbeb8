"""Whole runs: one input (or many) -> blocks on a ``BlockEngine`` -> one atomic output with times and box.

``backmap_file`` backmaps one CG trajectory to an output file; with a work folder its complete blocks are kept on
disk (resumable) and the output is assembled from them at the end. ``backmap_inputs`` does several inputs on one
engine (the workers keep their model) and carries on past a bad input unless ``fail_fast``.
``backmap_universe`` is the in-memory Python API with ``backend=`` / ``n_workers=`` / ``client=``.
"""
from __future__ import annotations

import os
from dataclasses import dataclass
from typing import Callable, Iterable, Iterator

import numpy as np

from latcpb.errors import LatcpbInputError
from latcpb.pipeline.blocks import DEFAULT_BLOCK_FRAMES, BlockResult, selected_frames, split_blocks
from latcpb.pipeline.parallel import BlockEngine, RunSpec
from latcpb.pipeline.resume import WorkFolder, input_identity, work_folder_for


@dataclass
class RunResult:
    """What one input produced (``error`` set instead when it failed)."""

    source: str
    output: str | None = None
    topology_output: str | None = None
    n_frames: int = 0
    n_atoms: int = 0
    error: Exception | None = None


def make_spec(universe, select="name CA", start=None, stop=None, step=None, source="input", seed=None,
              postprocess: Callable | None = None, note: Callable | None = None,
              block_frames: int = DEFAULT_BLOCK_FRAMES, **backmapper_options):
    """(RunSpec, selected input frame indices) for one CG Universe.

    Checks the selection here, once (``note(text)`` gets its notes, e.g. left-out non-protein beads); raises
    ``LatcpbInputError`` for a bad selection or when no frame is selected.
    """
    from latcpb.io.selection import select_beads

    frames = selected_frames(len(universe.universe.trajectory), start, stop, step)
    if len(frames) == 0:
        raise LatcpbInputError(f"{source}: no frames selected (start={start}, stop={stop}, step={step})")
    options = {k: v for k, v in backmapper_options.items() if v is not None}
    select_beads(universe, select, source, skip_unknown=options.get("skip_unknown", False),
                 beads_as_ca=options.get("beads_as_ca", False), note=note)
    spec = RunSpec(universe=universe, select=select, source=source, start=frames.start, stop=frames.stop,
                   step=frames.step, seed=seed, backmapper=options, block_frames=block_frames,
                   postprocess=postprocess)
    return spec, frames


def iter_block_results(engine: BlockEngine, spec: RunSpec, blocks, bar=None) -> Iterator[BlockResult]:
    """Every block's result in block order, computed by ``engine``; ``bar`` (tqdm) counts the frames."""
    for result in engine.map(spec, blocks):
        if bar is not None:
            bar.update(len(result.frames))
        yield result


def write_results(results: Iterable[BlockResult], output: str, topology=None, reports: list | None = None,
                  uneven_times: list | None = None) -> tuple[int, int, str | None]:
    """Write the blocks' frames (positions, time, MD step, box) to ``output`` atomically, with the all-atom
    topology beside a trajectory (``aa.xtc`` -> ``aa.pdb``); returns (frames written, atoms, topology path or None).

    topology: the run's ``ResidueTopology`` (default: the first result's); every block must have the same;
    reports: a list that gets the blocks' relaxation reports (when they have some); uneven_times: a list that
    gets ``output`` when its format could not keep the frame times (DCD holds start + k * dt only).
    """
    uneven_times = [] if uneven_times is None else uneven_times
    from latcpb.io.trajectory_writer import AtomicWriter, topology_path_for
    from latcpb.io.universe_builder import allatom_universe

    top_path = topology_path_for(output)
    writer = topology_writer = aa = None
    n = 0
    try:
        for result in results:
            if aa is None:
                topology = topology if topology is not None else result.topology
                aa = allatom_universe(topology, None, dt=result.dt) if result.topology_pdb is None else \
                    _pdb_universe(result.topology_pdb, result.dt)
                ts = aa.trajectory.ts
                writer = AtomicWriter(output, len(aa.atoms))
            if result.topology_pdb is None:
                _check_same_topology(topology, result)
            elif result.positions.shape[1] != len(aa.atoms):
                raise LatcpbInputError(f"frames {int(result.frames[0])}-{int(result.frames[-1])}: relaxation"
                                       " added other hydrogens than in the first frames")
            if reports is not None and result.reports is not None:
                reports.extend(result.reports)
            times, boxes, steps = result.output_times(), result.output_dimensions(), result.output_steps()
            for k, xyz in enumerate(result.positions):
                ts.positions = xyz
                ts.time = float(times[k])
                ts.dimensions = None if boxes is None else boxes[k]
                ts.frame = n
                if steps is not None:
                    ts.data["step"] = int(steps[k])
                if n == 0 and top_path:
                    topology_writer = AtomicWriter(top_path, len(aa.atoms))
                    topology_writer.write(aa.atoms)
                writer.write(aa.atoms)
                n += 1
        writer.close()
        if topology_writer is not None:
            topology_writer.close()
    except BaseException:
        for partial in (writer, topology_writer):
            if partial is not None:
                partial.abort()
        if writer is not None and writer.closed and os.path.exists(output):
            os.unlink(output)  # the trajectory was complete but its topology failed
        raise
    if not getattr(writer, "uniform_times", True):
        uneven_times.append(output)
    return n, len(aa.atoms), top_path


def _pdb_universe(text: str, dt: float):
    """Universe of PDB text (the hydrogenated topology that relaxation returns)."""
    import io
    import warnings

    import MDAnalysis as mda
    from MDAnalysis.lib.util import NamedStream

    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        u = mda.Universe(NamedStream(io.StringIO(text), "topology.pdb"), format="PDB")
    u.trajectory.ts.dt = dt  # the DCD header's dt
    return u


def _check_same_topology(topology, result: BlockResult) -> None:
    """Raise when a block does not have the run's chains and atoms (e.g. a work folder's blocks mixed up)."""
    other = result.topology
    n_atoms = int(topology.layout.atom_mask.sum())
    same = result.positions.shape[1] == n_atoms and (other is None or (
        np.array_equal(other.layout.atom_mask, topology.layout.atom_mask)
        and np.array_equal(other.layout.chain_index, topology.layout.chain_index)))
    if not same:
        raise LatcpbInputError(f"frames {int(result.frames[0])}-{int(result.frames[-1])}: the chains or atoms differ"
                               " from those of the first frames")


def backmap_file(engine: BlockEngine, universe, output: str, *, select="name CA", start=None, stop=None,
                 step=None, source=None, seed=None, block_frames=DEFAULT_BLOCK_FRAMES, resumable="auto",
                 resume=False, work_dir=None, keep_work=False, progress=False, inputs=None, postprocess=None,
                 note=None, relax: dict | None = None, report_path: str | None = None,
                 **backmapper_options) -> RunResult:
    """Backmap a CG Universe to ``output``.

    resumable: keep complete blocks in the work folder (``OUTPUT.latcpb-work``, or inside ``work_dir``) while
    the output is written ("auto": when the run has more than one block or a work-folder option is given; the
    folder is removed after success and after a bad-input error, kept when interrupted); resume: continue a
    work folder made with the same parameters (refused otherwise); keep_work: leave the work folder after
    success; inputs: the input paths recorded in the manifest (default: the Universe's files); relax:
    ``relax_block`` options (forcefield, solvent, platform, hydrogens ...) to minimise every frame with OpenMM on
    the workers, writing the reports to ``report_path`` (default ``OUTPUT.relax.json``).
    """
    source = source or _describe(universe)
    spec, frames = make_spec(universe, select, start, stop, step, source, seed, postprocess, note, block_frames,
                             **backmapper_options)
    blocks = split_blocks(frames, block_frames)
    if resumable == "auto":
        resumable = resume or keep_work or work_dir is not None or len(blocks) > 1
    work = None
    if resumable:
        if inputs is None:
            inputs = [getattr(universe.universe, "filename", None),
                      getattr(universe.universe.trajectory, "filename", None)]
        parameters = {"inputs": [input_identity(p) for p in inputs], "select": select,
                      "frames": [frames.start, frames.stop, frames.step], "block_frames": block_frames,
                      "seed": seed, "backmapper": spec.backmapper, "output": os.path.abspath(output),
                      "postprocess": repr(postprocess) if postprocess is not None else None,
                      "relax": relax}
        work = WorkFolder(work_folder_for(output, work_dir), parameters, resume=resume)
    reports = [] if relax is not None else None
    try:
        if relax is not None:
            spec = _with_relaxation(engine, spec, blocks[0], relax, block_frames, work)
        done = set() if work is None else {b.index for b in blocks if work.is_done(b)}
        if resume:
            _remove_stale_partials(output)
        with _progress(len(frames), progress, source,
                       initial=sum(len(b) for b in blocks if b.index in done)) as bar:
            todo = iter_block_results(engine, spec, [b for b in blocks if b.index not in done], bar)

            def in_order():  # blocks from disk where done, else computed (and saved), streamed to the writer
                for block in blocks:
                    if block.index in done:
                        yield work.load(block)
                    else:
                        result = next(todo)
                        if work is not None:
                            work.save(result)
                        yield result

            uneven, moves, valid = [], [], []

            def with_trace(results):  # every block's CA-trace move, for one note
                for result in results:
                    if result.trace_move is not None:
                        moves.append(result.trace_move)
                        valid.append(result.trace_valid)
                    yield result

            n, n_atoms, top_path = write_results(with_trace(in_order()), output,
                                                 work.load_topology() if done else None, reports=reports,
                                                 uneven_times=uneven)
        if moves and note is not None:
            from latcpb.backmapper import trace_note
            text = trace_note(source, np.concatenate(moves), np.concatenate(valid),
                              spec.backmapper.get("keep_beads", False))
            if text:
                note(text)
        if uneven and note is not None:
            note(f"{output}: DCD stores times as start + k * dt only; read frame times from the input (or write"
                 " xtc, trr or nc) where frames are not evenly spaced (--samples > 1)")
        if reports is not None:
            from latcpb.pipeline.relax_stage import openmm_plugin, relax_note
            written = openmm_plugin().write_report(reports, report_path or output + ".relax.json")
            damage = relax_note(reports, written)
            if damage and note is not None:
                note(damage)
    except LatcpbInputError:
        if work is not None and not keep_work:  # bad input: resuming cannot help
            work.remove()
        raise
    except BaseException:  # interrupted (Ctrl-C, SIGTERM) or failed otherwise: the complete blocks stay
        if work is not None and note is not None and os.path.isdir(work.path):
            note(f"{source}: {len(work.done_blocks())} complete blocks kept in {work.path}; rerun with --resume to"
                 " continue")
        raise
    if work is not None and not keep_work:
        work.remove()
    return RunResult(source, output, top_path, n, n_atoms)


def _remove_stale_partials(output: str) -> None:
    """Remove the temporary files that a killed run of the same output left (``AtomicWriter``'s names)."""
    import glob

    from latcpb.io.trajectory_writer import topology_path_for

    for path in filter(None, (output, topology_path_for(output))):
        directory, name = os.path.split(os.path.abspath(path))
        for stale in glob.glob(os.path.join(directory, glob.escape(f".{name}.") + "*.partial*")):
            os.unlink(stale)


def _with_relaxation(engine, spec, first_block, relax, block_frames, work):
    """``spec`` with a ``RelaxStage``: its reference is the run's first backmapped frame (computed here, or the
    one the work folder kept), the same for every block and worker."""
    import dataclasses
    import uuid

    from latcpb.pipeline.relax_stage import RelaxStage, openmm_plugin, reference_pdb

    openmm_plugin()  # a clear error before any work when OpenMM is missing
    reference = work.load_text("reference.pdb") if work is not None else None
    if reference is None:
        reference = reference_pdb(next(engine.map(spec, [first_block])))
        if work is not None:
            work.save_text("reference.pdb", reference)
    samples = spec.backmapper.get("samples", 1)
    stage = RelaxStage(reference, block_frames * samples, **relax)
    return dataclasses.replace(spec, postprocess=stage, key=uuid.uuid4().hex)


def backmap_inputs(engine: BlockEngine, jobs, fail_fast=False, on_done: Callable | None = None,
                   **options) -> list[RunResult]:
    """Backmap every ``(topology, trajectory or None, output)`` job on one engine.

    A bad input (``LatcpbInputError`` or another error of that input) is recorded in its ``RunResult.error`` and
    the next input runs, unless ``fail_fast`` (then it is raised). ``on_done(result)`` is called after each input.
    """
    from latcpb.io.reader import load_universe

    results = []
    for topology, trajectory, output in jobs:
        source = trajectory or topology
        try:
            universe = load_universe(topology, trajectory) if trajectory else load_universe(topology)
            result = backmap_file(engine, universe, output, source=source, inputs=[topology, trajectory],
                                  **options)
        except Exception as err:
            if fail_fast:
                raise
            result = RunResult(source, output, error=err)
        results.append(result)
        if on_done is not None:
            on_done(result)
    return results


def backmap_universe(universe, select="name CA", *, backend=None, n_workers=None, client=None,
                     block_frames=DEFAULT_BLOCK_FRAMES, start=None, stop=None, step=None, seed=None,
                     progress=False, **backmapper_options):
    """All-atom Universe (in memory, with the input's times, MD steps and boxes) of a CG Universe, backmapped in
    blocks.

    backend: "serial", "multiprocessing" or "dask" (MDAnalysis convention) or a running ``BlockEngine`` (kept
    open: its workers keep their model for the next call), n_workers: processes, client: a ``distributed.Client``
    (implies "dask"); the other options are ``Backmapper``'s. The same seed gives the same coordinates for every
    backend and number of workers.
    """
    import contextlib

    from latcpb.io.universe_builder import allatom_universe

    source = _describe(universe)
    spec, frames = make_spec(universe, select, start, stop, step, source, seed, block_frames=block_frames,
                             **backmapper_options)
    engine = backend if isinstance(backend, BlockEngine) else BlockEngine(backend, n_workers, client)
    with (contextlib.nullcontext() if engine is backend else engine), \
            _progress(len(frames), progress, source) as bar:
        results = list(iter_block_results(engine, spec, split_blocks(frames, block_frames), bar))
    topology = results[0].topology
    for result in results:
        _check_same_topology(topology, result)
    boxes = [r.output_dimensions() for r in results]
    steps = [r.output_steps() for r in results]
    return allatom_universe(topology, np.concatenate([r.positions for r in results]),
                            times=np.concatenate([r.output_times() for r in results]),
                            dimensions=None if any(b is None for b in boxes) else np.concatenate(boxes),
                            dt=results[0].dt, steps=None if any(t is None for t in steps) else np.concatenate(steps))


def _describe(universe) -> str:
    try:
        return universe.universe.trajectory.filename or universe.universe.filename or "universe"
    except AttributeError:
        return "universe"


def _progress(total, enabled, source, initial=0):
    from tqdm.auto import tqdm

    return tqdm(total=total, initial=initial, unit="frame", disable=not enabled, leave=False,
                desc=f"backmapping {os.path.basename(source)}")
