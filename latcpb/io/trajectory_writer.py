"""Atomic writing of all-atom output: frames go to a temporary file that is renamed only on success."""
from __future__ import annotations

import os
import tempfile
import warnings

import MDAnalysis as mda

from latcpb.errors import LatcpbInputError

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
    half-written output is left. ``write(atomgroup)`` writes the group's current positions as one frame.
    """

    def __init__(self, path: str, n_atoms: int):
        self.path = path
        self.format, self.multiframe = output_format(path)
        directory, name = os.path.split(os.path.abspath(path))
        ext = os.path.splitext(name)[1]
        fd, self._tmp = tempfile.mkstemp(prefix=f".{name}.", suffix=".partial" + ext, dir=directory)
        os.close(fd)
        os.unlink(self._tmp)  # some MDAnalysis writers refuse an existing file
        kwargs = {"multiframe": True} if self.format == "PDB" else {}
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            self._writer = mda.Writer(self._tmp, n_atoms=n_atoms, format=self.format, **kwargs)
        self.n_frames = 0
        self.closed = False

    def write(self, atoms) -> None:
        if self.n_frames and not self.multiframe:
            raise LatcpbInputError(f"-o {self.path}: {self.format} holds a single frame; choose a trajectory"
                                   " format (xtc, dcd, trr, pdb) or --stop 1")
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            self._writer.write(atoms)
        self.n_frames += 1

    def close(self) -> None:
        """Finish the file and move it to its final name."""
        self._writer.close()
        os.replace(self._tmp, self.path)
        self.closed = True

    def abort(self) -> None:
        """Drop the temporary file (nothing to do once closed)."""
        if self.closed:
            return
        try:
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

