"""PDB output that keeps what MD tools need: the real box (or none), chains separated by TER, disulfide CONECT.

MDAnalysis' ``PDBWriter`` writes a unitary ``CRYST1 1.000`` when there is no box (OpenMM reads it as a 0.1 nm
box), one CRYST1 for all models and no TER records. ``ChainPDBWriter`` (a subclass; it registers no format, so
MDAnalysis' writer registry is unchanged) instead writes CRYST1 only when the frame has a box, inside every MODEL
in multi-frame files (MDAnalysis and OpenMM read it per model), a TER after the last atom of every chain (where
segid or chainID changes) and CONECT records for the cross-links among the Universe's bonds (bonds between
residues other than the C-N peptide bond: the disulfide SG-SG bonds), not for every bond of a full topology.
"""
from __future__ import annotations

import io
import textwrap
from collections import defaultdict

import numpy as np
from MDAnalysis.coordinates.PDB import PDBWriter
from MDAnalysis.lib import util

from latcpb.io.periodic import has_box


class ChainPDBWriter(PDBWriter):
    """``PDBWriter(filename, n_atoms, multiframe=...)`` with real boxes, TER between chains and bond CONECTs."""

    def __init__(self, filename, n_atoms=None, multiframe=None, **kwargs):
        kwargs.setdefault("bonds", "all")
        super().__init__(filename, n_atoms=n_atoms, multiframe=multiframe, **kwargs)

    def _write_pdb_bonds(self):
        """CONECT for the cross-links of the written atoms (serials as written, 1-based)."""
        if self.bonds is None or not getattr(self, "obj", None):
            return
        atoms = self.obj.atoms
        try:
            pairs = atoms.universe.bonds.indices
        except Exception:  # no bonds in the topology
            return
        if len(pairs) == 0 or len(atoms) >= 100000:
            return
        serial = {int(ix): i for i, ix in enumerate(atoms.indices, start=1)}
        resindex = atoms.universe.atoms.resindices
        names = np.asarray(atoms.universe.atoms.names).astype(str)
        linked = defaultdict(list)
        for a, b in pairs:
            a, b = int(a), int(b)
            if a not in serial or b not in serial or resindex[a] == resindex[b] or {names[a], names[b]} == {"C", "N"}:
                continue
            linked[serial[a]].append(serial[b])
            linked[serial[b]].append(serial[a])
        for a in sorted(linked):
            self.CONECT([a] + sorted(linked[a]))

    def _write_pdb_header(self):
        if self.first_frame_done is True:
            return
        self.first_frame_done = True
        u = self.obj.universe
        self.HEADER(u.trajectory)
        self._write_pdb_title()
        self.COMPND(u.trajectory)
        try:
            remarks = []
            for line in util.asiterable(u.trajectory.remarks):
                remarks.extend(textwrap.wrap(line, self.remark_max_length))
            self.REMARK(*remarks)
        except AttributeError:
            pass
        if not self._multiframe and has_box(u.trajectory.ts.dimensions):
            self.CRYST1(self.convert_dimensions_to_unitcell(u.trajectory.ts))

    def _write_timestep(self, ts, multiframe=False):
        real, buffer = self.pdbfile, io.StringIO()
        self.pdbfile = buffer
        try:
            super()._write_timestep(ts, multiframe=multiframe)
        finally:
            self.pdbfile = real
        ends = set(chain_ends(self.obj.atoms).tolist())
        n_atom = 0
        for line in buffer.getvalue().splitlines(keepends=True):
            real.write(line)
            if line.startswith("MODEL") and has_box(ts.dimensions):
                self.CRYST1(self.convert_dimensions_to_unitcell(ts))
            elif line.startswith(("ATOM", "HETATM")):
                if n_atom in ends:
                    real.write("TER\n")
                n_atom += 1


def chain_ends(atoms) -> np.ndarray:
    """Indices (within ``atoms``) of the last atom of every chain: where segid or chainID changes, and the last."""
    n = len(atoms)
    keys = []
    for name in ("segids", "chainIDs"):
        try:
            keys.append(np.asarray(getattr(atoms, name)).astype(str))
        except Exception:  # the attribute is absent
            keys.append(np.full(n, "", dtype=str))
    change = (keys[0][1:] != keys[0][:-1]) | (keys[1][1:] != keys[1][:-1])
    return np.r_[np.flatnonzero(change), n - 1] if n else np.zeros(0, dtype=np.int64)
