"""``BackmapReporter``: backmap the CA beads of a running CG OpenMM simulation to all-atom frames on the fly."""
from __future__ import annotations

import os

import numpy as np
import openmm.unit as unit

from latcpb.errors import LatcpbInputError
from latcpb_openmm.topology import topology_to_universe


class BackmapReporter:
    """OpenMM reporter that writes backmapped all-atom frames of a CA-level simulation.

    Every ``reportInterval`` steps the positions of the beads matching ``select`` (MDAnalysis selection over the
    simulation's topology; residue names, atom names and chains come from it) are backmapped with
    ``backmapper`` (a ``latcpb.Backmapper``; default ``latcpb.Backmapper()``) and appended to ``file`` (XTC, DCD or
    any MDAnalysis trajectory format, by extension). The all-atom topology is written once as a PDB beside it
    (``topology_file``, default ``file`` with ``.pdb``). With ``samples`` > 1 in the backmapper each report appends
    that many frames. Use ``close()`` or a ``with`` block to finish the file.
    """

    def __init__(self, file, reportInterval, backmapper=None, select="name CA", topology_file=None,
                 enforcePeriodicBox=None):
        if int(reportInterval) < 1:
            raise LatcpbInputError(f"reportInterval must be >= 1 step, not {reportInterval}")
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
        self._plan = None
        self._writer = None
        self._aa = None
        self._bead_index = None
        self.frames_written = 0
        self.closed = False

    # OpenMM reporter protocol -------------------------------------------------------------------------------
    def describeNextReport(self, simulation):
        """Steps to the next report and what it needs (OpenMM >= 8.2 dict form): positions only."""
        steps = self._interval - simulation.currentStep % self._interval
        return {"steps": steps, "periodic": self._periodic, "include": ["positions"]}

    def report(self, simulation, state):
        """Backmap the current CA positions and append the all-atom frame(s)."""
        if self.closed:
            raise RuntimeError(f"BackmapReporter for {self.file} is closed")
        xyz = state.getPositions(asNumpy=True).value_in_unit(unit.angstrom)
        if self._plan is None:
            self._start(simulation, np.asarray(xyz))
        ca = np.asarray(xyz, dtype=np.float32)[self._bead_index][None]
        frames = self.backmapper.backmap_coordinates(self._plan, ca)
        time_ps = state.getTime().value_in_unit(unit.picosecond)
        ts = self._aa.trajectory.ts
        for frame in np.asarray(frames):
            self._aa.atoms.positions = frame
            ts.time = time_ps
            if self.frames_written == 0:
                self._write_topology()
            self._writer.write(self._aa.atoms)
            self.frames_written += 1

    # set-up and clean-up ------------------------------------------------------------------------------------
    def _start(self, simulation, xyz):
        """Plan once: CG Universe from the OpenMM topology, backmapping plan, trajectory writer."""
        import MDAnalysis as mda

        cg = topology_to_universe(simulation.topology, xyz[None])
        beads = cg.select_atoms(self.select)
        if len(beads) == 0:
            raise LatcpbInputError(f"BackmapReporter: selection {self.select!r} matched no atoms of the simulation")
        self._bead_index = beads.indices
        self._plan = self.backmapper.plan(beads, source=f"simulation ({self.select})")
        self._aa = self._plan.empty_universe(n_frames=1)
        self._writer = mda.Writer(self.file, n_atoms=self._plan.n_atoms)

    def _write_topology(self):
        """All-atom topology PDB (first frame's coordinates) beside the trajectory."""
        import warnings

        with warnings.catch_warnings():
            warnings.simplefilter("ignore")  # MDAnalysis warns about absent optional PDB fields
            self._aa.atoms.write(self.topology_file)

    def close(self):
        """Finish the trajectory file (idempotent)."""
        if self._writer is not None:
            self._writer.close()
            self._writer = None
        self.closed = True

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.close()
        return False

    def __del__(self):
        try:
            self.close()
        except Exception:  # interpreter shutdown: nothing left to do
            pass
