"""Atomic writing of all-atom output: frames go to a temporary file that is renamed only on success."""
from __future__ import annotations

import os
import tempfile
import warnings

import MDAnalysis as mda
import numpy as np

from latcpb.errors import LatcpbInputError
from latcpb.io.pdb_writer import ChainPDBWriter

# extension -> (MDAnalysis format, holds several frames)
OUTPUT_FORMATS = {"xtc": ("XTC", True), "trr": ("TRR", True), "dcd": ("DCD", True), "pdb": ("PDB", True),
                  "ent": ("PDB", True), "nc": ("NCDF", True), "ncdf": ("NCDF", True), "xyz": ("XYZ", True),
                  "gro": ("GRO", False)}
TOPOLOGY_FORMATS = {"pdb", "ent", "gro"}


def output_format(path: str) -> tuple[str, bool]:
    """(MDAnalysis format, multi-frame) for an output path; raises ``LatcpbInputError`` for unknown extensions."""
    ext = os.path.splitext(path)[1].lower().lstrip(".")
    if ext not in OUTPUT_FORMATS:
        known = ", ".join(sorted(OUTPUT_FORMATS))
        raise LatcpbInputError(f"-o {path}: unknown output extension '.{ext}' (known: {known})")
    return OUTPUT_FORMATS[ext]


def check_output_path(path: str) -> None:
    """Raise ``LatcpbInputError`` if the output's directory is missing or not writable, or the format unknown."""
    output_format(path)
    directory = os.path.dirname(os.path.abspath(path))
    if not os.path.isdir(directory):
        raise LatcpbInputError(f"-o {path}: output directory {directory} does not exist")
    if not os.access(directory, os.W_OK):
        raise LatcpbInputError(f"-o {path}: output directory {directory} is not writable")


def topology_path_for(path: str) -> str | None:
    """Path of the all-atom topology written beside a trajectory output (``aa.xtc`` -> ``aa.pdb``)."""
    stem, ext = os.path.splitext(path)
    return None if ext.lower().lstrip(".") in TOPOLOGY_FORMATS else stem + ".pdb"


class AtomicWriter:
    """An MDAnalysis writer to ``path`` that writes under a temporary name and renames on ``close()``.

    Used as a context manager: an exception (or Ctrl-C) inside the block removes the temporary file, so no
    half-written output is left. ``write(atomgroup)`` writes the group's current positions as one frame, with the
    time, MD step and box of its Universe's current timestep wherever the format holds them: XTC and TRR (time,
    step, box), NC (time, box), DCD (box; times as start + k * dt, the DCD header's only way: set from the first two
    frames, ``uniform_times`` False when later frames do not follow it), GRO and PDB (box; no time field). PDB
    output has CRYST1 only when there is a box (in every MODEL), TER between chains and CONECT for disulfides
    (``latcpb.io.pdb_writer``).
    """

    def __init__(self, path: str, n_atoms: int):
        self.path = path
        self.n_atoms = n_atoms
        self.format, self.multiframe = output_format(path)
        directory, name = os.path.split(os.path.abspath(path))
        ext = os.path.splitext(name)[1]
        fd, self._tmp = tempfile.mkstemp(prefix=f".{name}.", suffix=".partial" + ext, dir=directory)
        os.close(fd)
        os.unlink(self._tmp)  # some MDAnalysis writers refuse an existing file
        self._writer = None
        self._dcd_time = None   # (first time, dt) the DCD header says
        self.uniform_times = True
        self.n_frames = 0
        self.closed = False

    def _open(self, atoms):
        """The MDAnalysis writer, made at the first frame (DCD needs its start time and dt in the header)."""
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            if self.format == "PDB":
                return ChainPDBWriter(self._tmp, n_atoms=self.n_atoms, multiframe=True)
            if self.format == "DCD":
                trajectory = atoms.universe.trajectory
                t0 = float(trajectory.ts.time)
                try:
                    dt = float(trajectory.dt)
                except Exception:  # no dt: one frame
                    dt = 1.0
                if not np.isfinite(dt) or dt <= 0:
                    dt = 1.0
                nsavc = 1 if abs(t0 / dt - round(t0 / dt)) < 1e-6 else 1000
                istart = int(round(t0 / dt * nsavc))
                self._dcd_time = (istart * dt / nsavc, dt)
                return mda.Writer(self._tmp, n_atoms=self.n_atoms, format="DCD", dt=dt, nsavc=nsavc, istart=istart)
            return mda.Writer(self._tmp, n_atoms=self.n_atoms, format=self.format)

    def write(self, atoms) -> None:
        if self.n_frames and not self.multiframe:
            raise LatcpbInputError(f"-o {self.path}: {self.format} holds a single frame; choose a trajectory"
                                   " format (xtc, dcd, trr, pdb) or --stop 1")
        if self._writer is None:
            self._writer = self._open(atoms)
        if self._dcd_time is not None:
            t0, dt = self._dcd_time
            if abs(float(atoms.universe.trajectory.ts.time) - (t0 + self.n_frames * dt)) > 1e-3 * max(dt, 1e-3):
                self.uniform_times = False
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            self._writer.write(atoms)
        self.n_frames += 1

    def close(self) -> None:
        """Finish the file and move it to its final name."""
        if self._writer is None:
            raise LatcpbInputError(f"-o {self.path}: no frames to write")
        self._writer.close()
        os.replace(self._tmp, self.path)
        self.closed = True

    def abort(self) -> None:
        """Drop the temporary file (nothing to do once closed)."""
        if self.closed:
            return
        try:
            if self._writer is not None:
                self._writer.close()
        except Exception:  # the writer may be in any state after an error; the file is removed anyway
            pass
        if os.path.exists(self._tmp):
            os.unlink(self._tmp)

    def __enter__(self):
        return self

    def __exit__(self, exc_type, exc, tb):
        if exc_type is None:
            self.close()
        else:
            self.abort()
        return False
