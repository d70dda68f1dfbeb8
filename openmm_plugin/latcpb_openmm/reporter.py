"""``BackmapReporter``: backmap the CA beads of a running CG OpenMM simulation to all-atom frames on the fly.

The simulation only hands over positions (a bounded queue); a background thread backmaps and writes, so the CG
simulation is not held up by the backmapper, and a frame that cannot be backmapped is logged and counted instead of
ending the user's ``simulation.step()``.
"""
from __future__ import annotations

import logging
import os
import queue
import threading
import warnings

import numpy as np
import openmm as mm
import openmm.unit as unit

from latcpb.errors import LatcpbInputError
from latcpb.io.selection import DEFAULT_SELECT
from latcpb_openmm.convert import dimensions_of, topology_to_universe

log = logging.getLogger(__name__)
MAX_KEPT_FAILURES = 100  # failure messages kept in ``failures``
_STOP = object()


def bead_bonds(simulation, bead_index: np.ndarray) -> np.ndarray:
    """Bonds [B, 2] (atom indices) between consecutive beads of ``bead_index`` in the simulation's own Topology,
    or, where the Topology has none between them, in its System's HarmonicBondForces (CG models such as
    OpenABC's HPS and MOFF build their Topology from a CA PDB without bonds and keep the chain in the System)."""
    position = {int(b): k for k, b in enumerate(bead_index)}

    def consecutive(pairs):
        out = set()
        for i, j in pairs:
            ki, kj = position.get(int(i)), position.get(int(j))
            if ki is not None and kj is not None and abs(ki - kj) == 1:
                out.add((min(i, j), max(i, j)))
        return out

    bonds = consecutive((a.index, b.index) for a, b in simulation.topology.bonds())
    if not bonds:
        for force in simulation.system.getForces():
            if isinstance(force, mm.HarmonicBondForce):
                bonds |= consecutive(force.getBondParameters(k)[:2] for k in range(force.getNumBonds()))
    return np.asarray(sorted(bonds), dtype=np.int64).reshape(-1, 2)


class BackmapReporter:
    """OpenMM reporter that writes backmapped all-atom frames of a CA-level simulation.

    Every ``reportInterval`` steps the positions of the beads matching ``select`` (MDAnalysis selection over the
    simulation's topology: residue names, atom names, chains) are backmapped with ``backmapper`` (a
    ``latcpb.Backmapper``; default ``latcpb.Backmapper()``) and appended to ``file`` (XTC, DCD or any MDAnalysis
    trajectory format, by extension) with the simulation time (ps), step and box (from the State's periodic box
    vectors when the System is periodic). The all-atom topology is written once as a PDB beside it
    (``topology_file``, default ``file`` with ``.pdb``). With ``samples`` > 1 in the backmapper each report appends
    that many frames (same time, step and box).

    Chains come from the simulation: bonds between consecutive beads in its Topology (or, without any, in its
    System's HarmonicBondForces) and its chains; the backmapper's chain rule then uses them.
    ``enforcePeriodicBox``: False (default) reports the simulation's unwrapped positions, so chains stay whole.
    ``background`` (default True): a worker thread backmaps; ``report`` only queues positions, waiting when
    ``queue_size`` reports are pending. A frame that cannot be backmapped (or written) is logged, counted in
    ``failed_frames`` (messages in ``failures``) and skipped; with ``strict=True`` the error is raised instead, from
    ``report`` (the next one, in background mode) or ``close``. A selection that matches nothing is a set-up error
    and is raised at the first report. Call ``close()`` (or use a ``with`` block) when the simulation is done: it
    waits for the queued frames, writes them and closes the file; nothing is flushed at interpreter exit.
    """

    def __init__(self, file, reportInterval, backmapper=None, select=DEFAULT_SELECT, topology_file=None,
                 enforcePeriodicBox=False, strict=False, background=True, queue_size=8):
        if int(reportInterval) < 1:
            raise LatcpbInputError(f"reportInterval must be >= 1 step, not {reportInterval}")
        if int(queue_size) < 1:
            raise LatcpbInputError(f"queue_size must be >= 1, not {queue_size}")
        self.file = os.fspath(file)
        stem, ext = os.path.splitext(self.file)
        if ext.lower() == ".pdb":
            raise LatcpbInputError(f"{self.file}: give a trajectory file (.xtc, .dcd, ...); the topology PDB is "
                                   "written beside it")
        self.topology_file = os.fspath(topology_file) if topology_file is not None else stem + ".pdb"
        self._interval = int(reportInterval)
        self._periodic = enforcePeriodicBox
        self.select = select
        if backmapper is None:
            import latcpb
            backmapper = latcpb.Backmapper()
        self.backmapper = backmapper
        self.strict = bool(strict)
        self.background = bool(background)
        self._queue = queue.Queue(maxsize=int(queue_size))
        self._thread = None
        self._error = None        # strict mode: first error of the worker, raised at the next call
        self._plan = None
        self._cg = None           # CG Universe of the simulation's topology (bonds included)
        self._writer = None
        self._aa = None
        self._bead_index = None
        self._uses_pbc = False
        self.frames_written = 0
        self.reports_received = 0
        self.failed_frames = 0
        self.failures = []        # [(step, message)] of the first MAX_KEPT_FAILURES failures
        self.closed = False

    # OpenMM reporter protocol -------------------------------------------------------------------------------
    def describeNextReport(self, simulation):
        """Steps to the next report and what it needs (OpenMM >= 8.2 dict form): positions only."""
        steps = self._interval - simulation.currentStep % self._interval
        return {"steps": steps, "periodic": self._periodic, "include": ["positions"]}

    def report(self, simulation, state):
        """Hand the current bead positions, time, step and box to the backmapper (queued in background mode)."""
        if self.closed:
            raise RuntimeError(f"BackmapReporter for {self.file} is closed")
        self._raise_pending()
        if self._bead_index is None:
            self._start(simulation)
        xyz = np.asarray(state.getPositions(asNumpy=True).value_in_unit(unit.angstrom), dtype=np.float32)
        try:
            step = int(state.getStepCount())
        except AttributeError:  # OpenMM < 8
            step = int(simulation.currentStep)
        box = dimensions_of(state.getPeriodicBoxVectors()) if self._uses_pbc else None
        item = (xyz[self._bead_index].copy(), float(state.getTime().value_in_unit(unit.picosecond)), step, box)
        self.reports_received += 1
        if not self.background:
            self._process(item)
            return
        if self._thread is None:
            self._thread = threading.Thread(target=self._work, name=f"BackmapReporter({self.file})", daemon=True)
            self._thread.start()
        self._queue.put(item)  # waits while queue_size reports are pending: memory stays bounded

    # worker ------------------------------------------------------------------------------------------------
    def _work(self):
        while True:
            item = self._queue.get()
            try:
                if item is _STOP:
                    return
                self._process(item)
            except BaseException as err:  # strict mode: kept for the simulation thread to raise
                if self._error is None:
                    self._error = err
            finally:
                self._queue.task_done()

    def _process(self, item):
        """Backmap and write one report; failures are counted (and re-raised with ``strict``)."""
        ca, time_ps, step, box = item
        try:
            if self._plan is None:
                self._plan_from(ca, box)
            frames = self.backmapper.backmap_coordinates(self._plan, ca[None])
            ts = self._aa.trajectory.ts
            for frame in np.asarray(frames):
                self._aa.atoms.positions = frame
                ts.time = time_ps
                ts.data["step"] = step
                ts.dimensions = box
                if self._writer is None:
                    self._open_files()
                self._writer.write(self._aa.atoms)
                self.frames_written += 1
        except Exception as err:
            self.failed_frames += 1
            message = f"step {step} ({time_ps:g} ps): {type(err).__name__}: {str(err).strip()}"
            if len(self.failures) < MAX_KEPT_FAILURES:
                self.failures.append((step, message))
            log.warning("BackmapReporter %s: frame not backmapped, %s", self.file, message)
            if self.failed_frames == 1 and not self.strict:
                warnings.warn(f"BackmapReporter {self.file}: a frame could not be backmapped and was skipped "
                              f"({message}); later failures are logged and counted in failed_frames",
                              RuntimeWarning, stacklevel=2)
            if self.strict:
                raise

    def _raise_pending(self):
        if self._error is not None:
            err, self._error = self._error, None
            raise err

    # set-up and clean-up ------------------------------------------------------------------------------------
    def _start(self, simulation):
        """CG Universe of the simulation's Topology (its chains, and bonds between consecutive beads)."""
        n = simulation.topology.getNumAtoms()
        cg = topology_to_universe(simulation.topology, np.zeros((1, n, 3), dtype=np.float32), dimensions=None)
        try:
            beads = cg.select_atoms(self.select)
        except Exception as err:  # MDAnalysis SelectionError
            raise LatcpbInputError(f"BackmapReporter: invalid selection {self.select!r} ({err})") from err
        if len(beads) == 0:
            raise LatcpbInputError(f"BackmapReporter: selection {self.select!r} matched no atoms of the simulation")
        if hasattr(self.backmapper, "select"):  # the core's bead choice: amino-acid residues only, with a note
            beads = self.backmapper.select(cg, self.select, source=f"simulation ({self.select})")
        bonds = bead_bonds(simulation, beads.indices)
        if len(bonds):
            cg.add_bonds([tuple(map(int, b)) for b in bonds])
        self._cg, self._beads = cg, beads
        self._bead_index = beads.indices
        self._uses_pbc = bool(simulation.system.usesPeriodicBoundaryConditions())

    def _plan_from(self, ca, box):
        """Backmapping plan from the beads at this frame (retried at the next report if it fails)."""
        self._beads.positions = ca
        self._plan = self.backmapper.plan(self._beads, source=f"simulation ({self.select})", positions=ca[None],
                                          boxes=None if box is None else np.asarray(box)[None])
        self._aa = self._plan.empty_universe(n_frames=1)

    def _open_files(self):
        """All-atom topology PDB (this frame's coordinates, box) beside the trajectory, and the trajectory
        writer."""
        import MDAnalysis as mda

        partial = self.topology_file + ".partial"
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")  # MDAnalysis warns about absent optional PDB fields
            with mda.Writer(partial, n_atoms=self._plan.n_atoms, format="PDB") as w:
                w.write(self._aa.atoms)
        os.replace(partial, self.topology_file)
        self._writer = mda.Writer(self.file, n_atoms=self._plan.n_atoms)

    def flush(self):
        """Wait until every queued report is backmapped and written (raises a pending strict-mode error)."""
        if self._thread is not None and self._thread.is_alive():
            self._queue.join()
        self._raise_pending()

    def close(self):
        """Backmap the queued reports, finish the trajectory file and stop the worker (idempotent); raises a
        pending strict-mode error after closing."""
        if self.closed:
            return
        self.closed = True
        try:
            if self._thread is not None:
                self._queue.put(_STOP)
                self._thread.join()
                self._thread = None
        finally:
            if self._writer is not None:
                self._writer.close()
                self._writer = None
        self._raise_pending()

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.close()
        return False
