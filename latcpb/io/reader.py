"""Opening user input with MDAnalysis, turning its many failure modes into one-line ``LatcpbInputError``s."""
from __future__ import annotations

import os
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
    return universe
