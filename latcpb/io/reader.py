"""Opening user input with MDAnalysis, turning its many failure modes into one-line ``LatcpbInputError``s."""
from __future__ import annotations

import os
import struct
import warnings

import MDAnalysis as mda

from latcpb.errors import LatcpbInputError


def _first_line(err: BaseException) -> str:
    text = str(err).strip().splitlines()
    return text[0] if text else type(err).__name__


def load_universe(topology: str, trajectory: str | None = None) -> mda.Universe:
    """``mda.Universe(topology[, trajectory])`` with errors that name the file at fault."""
    for path in (topology, trajectory):
        if path is not None and not os.path.exists(path):
            raise LatcpbInputError(f"{path}: no such file")
        if path is not None and os.path.isfile(path) and os.path.getsize(path) == 0:
            raise LatcpbInputError(f"{path}: the file is empty")
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            topo_only = mda.Universe(topology)
    except Exception as err:  # MDAnalysis raises many types for unreadable files
        raise LatcpbInputError(f"{topology}: cannot read as a topology ({_first_line(err)})") from err
    if len(topo_only.atoms) == 0:
        raise LatcpbInputError(f"{topology}: the topology holds no atoms")
    if trajectory is None:
        universe = topo_only
    else:
        try:
            with warnings.catch_warnings():
                warnings.simplefilter("ignore")
                universe = mda.Universe(topology, trajectory)
        except Exception as err:
            message = _first_line(err)
            if "same number of atoms" in message or "number of atoms" in message.lower():
                message = f"its atom count does not match the {len(topo_only.atoms)} atoms of {topology}"
            raise LatcpbInputError(f"{trajectory}: cannot read as a trajectory ({message})") from err
    if len(universe.trajectory) == 0:
        raise LatcpbInputError(f"{trajectory or topology}: the trajectory holds no frames")
    if trajectory is not None and trajectory.lower().endswith(".xtc"):
        _check_xtc_complete(trajectory, universe.trajectory)
    return universe


def _check_xtc_complete(path: str, reader) -> None:
    """Raise if bytes follow the last whole frame of an XTC file (a frame cut off: MDAnalysis skips it silently).

    The end of the last frame is read from its header: 92 header bytes, then the compressed coordinates
    (their byte count rounded up to 4); files of fewer than 10 atoms store 12 bytes per atom uncompressed.
    """
    try:
        offset = int(reader._xdr.offsets[-1])
    except (AttributeError, IndexError):  # not MDAnalysis' XDR-based reader: nothing to check
        return
    size = os.path.getsize(path)
    with open(path, "rb") as fh:
        fh.seek(offset)
        header = fh.read(92)
    n_atoms = struct.unpack(">i", header[4:8])[0]
    if n_atoms <= 9:
        end = offset + 56 + 4 + 12 * n_atoms
    else:
        n_bytes = struct.unpack(">i", header[88:92])[0]
        end = offset + 92 + (n_bytes + 3) // 4 * 4
    if size > end:
        raise LatcpbInputError(f"{path}: {size - end} bytes after the last whole frame ({len(reader)}): the file is"
                               " truncated or damaged")
