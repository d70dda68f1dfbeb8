"""Shared fixtures: the validation data set (skipped where absent), CA-only CG files made in tmp, seeds."""
from __future__ import annotations

import os
import random
import warnings
from pathlib import Path

import numpy as np
import pytest

REPO = Path(__file__).resolve().parent.parent


def shared_val_dir() -> Path | None:
    """$LATCPB_SHARED_DATA/val (or the variable itself if it is the val folder), else <repo>/../shared/data/val."""
    candidates = []
    env = os.environ.get("LATCPB_SHARED_DATA")
    if env:
        candidates += [Path(env) / "val", Path(env)]
    candidates.append(REPO.parent / "shared" / "data" / "val")
    for path in candidates:
        if (path / "INDEX.tsv").is_file():
            return path
    return None


def val_entries() -> list[dict]:
    """Entries of the validation set: {name, pdb, xtc or None}; [] where the data is absent."""
    root = shared_val_dir()
    if root is None:
        return []
    names = [line.split("\t", 1)[0] for line in (root / "INDEX.tsv").read_text().splitlines()[1:] if line.strip()]
    return [{"name": n, "pdb": root / f"{n}.pdb",
             "xtc": (root / f"{n}.xtc") if (root / f"{n}.xtc").exists() else None} for n in names]


def val_entry_names() -> list[str]:
    """Names for parametrising; a single placeholder (skipped by ``val_entry``) where the data is absent."""
    return [e["name"] for e in val_entries()] or ["<no validation data>"]


@pytest.fixture(scope="session")
def val_dir() -> Path:
    root = shared_val_dir()
    if root is None:
        pytest.skip("validation data not found (set LATCPB_SHARED_DATA or provide ../shared/data/val)")
    return root


@pytest.fixture
def val_entry(request, val_dir):
    """Use with ``@pytest.mark.parametrize('val_entry', val_entry_names(), indirect=True)``."""
    entry = {e["name"]: e for e in val_entries()}.get(request.param)
    if entry is None:
        pytest.skip(f"validation entry {request.param} not available")
    return entry


def backmap_command() -> list[str]:
    """The installed ``latcpb-backmap`` console script (``python -m latcpb.cli.backmap`` if not on PATH)."""
    import shutil
    import sys

    exe = shutil.which("latcpb-backmap")
    return [exe] if exe else [sys.executable, "-m", "latcpb.cli.backmap"]


def quiet_universe(*paths, **kwargs):
    """``mda.Universe`` without its harmless warnings (read-only offset cache, missing CRYST1 ...)."""
    import MDAnalysis as mda

    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        return mda.Universe(*[str(p) for p in paths], **kwargs)


def write_cg(u, out_dir, name="cg", traj_ext="xtc", select="name CA", frames=None, edit=None):
    """CA-only CG files of an all-atom Universe: ``<name>.pdb`` (frame 0) and ``<name>.<traj_ext>`` (all frames).

    frames: iterable of frame indices (default all); edit(cg_universe) may rename/modify the CG topology before
    writing; traj_ext None writes the PDB only; "pdb" as traj_ext writes a multi-model PDB.
    Returns (topology path, trajectory path or None).
    """
    import MDAnalysis as mda
    from MDAnalysis.coordinates.memory import MemoryReader

    out_dir = Path(out_dir)
    beads = u.select_atoms(select)
    frames = range(len(u.trajectory)) if frames is None else list(frames)
    coords = []
    for i in frames:
        u.trajectory[i]
        coords.append(beads.positions.copy())
    coords = np.stack(coords).astype(np.float32)
    cg = mda.Merge(beads)
    cg.load_new(coords, format=MemoryReader)
    if edit is not None:
        edit(cg)
    top = out_dir / f"{name}.pdb"
    traj = None
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        cg.trajectory[0]
        cg.atoms.write(str(top))
        if traj_ext:
            traj = out_dir / f"{name}_traj.{traj_ext}" if traj_ext == "pdb" else out_dir / f"{name}.{traj_ext}"
            kwargs = {"multiframe": True} if traj_ext == "pdb" else {}
            with mda.Writer(str(traj), n_atoms=len(cg.atoms), **kwargs) as w:
                for _ in cg.trajectory:
                    w.write(cg.atoms)
    return top, traj


@pytest.fixture
def make_cg(tmp_path):
    """``make_cg(universe, **kwargs)`` -> (cg.pdb, cg.<ext>) in the test's tmp directory (see ``write_cg``)."""
    def make(u, out_dir=None, **kwargs):
        return write_cg(u, out_dir or tmp_path, **kwargs)
    return make


@pytest.fixture
def seeded():
    """Seed Python, numpy and torch (returns the seed)."""
    import torch

    seed = 1234
    random.seed(seed)
    np.random.seed(seed)
    torch.manual_seed(seed)
    return seed
