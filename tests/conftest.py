"""Shared fixtures: the small validation set in tests/data/val (always there), the whole validation set of
../shared/data/val (optional: tests on it carry the ``shared_data`` marker and are deselected where it is absent),
CA-only CG files made in tmp, seeds.

``LATCPB_SHARED_DATA`` points at the shared data (its ``val`` folder or the folder itself); ``LATCPB_NO_SHARED=1``
hides it, to run the suite as on a fresh clone."""
from __future__ import annotations

import os
import random
import warnings
from pathlib import Path

import numpy as np
import pytest

REPO = Path(__file__).resolve().parent.parent
DATA = REPO / "tests" / "data"
# The small validation set: 6 entries of the validation set listed in tests/data/val/INDEX.tsv, their files in
# tests/data/val, or in tests/data/mini (CLN025, T0922: one copy of each structure); see tests/data/README.md.
SMALL_VAL = DATA / "val"
SMALL_VAL_FOLDERS = (DATA / "val", DATA / "mini")


def shared_val_dir() -> Path | None:
    """$LATCPB_SHARED_DATA/val (or the variable itself if it is the val folder), else <repo>/../shared/data/val;
    None where absent or where LATCPB_NO_SHARED is set."""
    if os.environ.get("LATCPB_NO_SHARED", "") not in ("", "0"):
        return None
    candidates = []
    env = os.environ.get("LATCPB_SHARED_DATA")
    if env:
        candidates += [Path(env) / "val", Path(env)]
    candidates.append(REPO.parent / "shared" / "data" / "val")
    for path in candidates:
        if (path / "INDEX.tsv").is_file():
            return path
    return None


def _names(root: Path) -> list[str]:
    return [line.split("\t", 1)[0] for line in (root / "INDEX.tsv").read_text().splitlines()[1:] if line.strip()]


def _entry(name: str, folders, shared: bool) -> dict:
    pdb = next(f / f"{name}.pdb" for f in folders if (f / f"{name}.pdb").is_file())
    xtc = pdb.with_suffix(".xtc")
    return {"name": name, "pdb": pdb, "xtc": xtc if xtc.is_file() else None, "shared": shared}


def val_entries() -> list[dict]:
    """Entries {name, pdb, xtc or None, shared}: the small set of tests/data/val, then the entries only the
    shared validation set has (``shared`` True) where it is present."""
    small = [_entry(n, SMALL_VAL_FOLDERS, shared=False) for n in _names(SMALL_VAL)]
    root = shared_val_dir()
    if root is None:
        return small
    known = {e["name"] for e in small}
    return small + [_entry(n, [root], shared=True) for n in _names(root) if n not in known]


def val_entry_params() -> list:
    """Parameters for ``@pytest.mark.parametrize('val_entry', val_entry_params(), indirect=True)``: one per entry,
    those of the shared set marked ``shared_data``."""
    return [pytest.param(e["name"], marks=[pytest.mark.shared_data] if e["shared"] else [], id=e["name"])
            for e in val_entries()]


val_entry_names = val_entry_params  # older name


def pytest_configure(config):
    config.addinivalue_line("markers", "shared_data: needs ../shared/data (LATCPB_SHARED_DATA); deselected "
                                       "where it is absent")


def pytest_collection_modifyitems(config, items):
    """Deselect (not skip) the tests that need the shared data where it is absent."""
    if shared_val_dir() is not None:
        return
    keep = [item for item in items if item.get_closest_marker("shared_data") is None]
    if len(keep) < len(items):
        config.hook.pytest_deselected(items=[item for item in items if item not in keep])
        items[:] = keep


@pytest.fixture(scope="session")
def val_dir(tmp_path_factory) -> Path:
    """The small validation set as one folder in the layout of ../shared/data/val (INDEX.tsv, NAME.pdb,
    NAME.xtc): copies, made in tmp, of the files in tests/data/val and tests/data/mini (about 330 KB)."""
    import shutil

    folder = tmp_path_factory.mktemp("small_val")
    shutil.copy(SMALL_VAL / "INDEX.tsv", folder)
    for e in val_entries():
        if not e["shared"]:
            for path in (e["pdb"], e["xtc"]):
                if path is not None:
                    shutil.copy(path, folder)
    return folder


@pytest.fixture
def val_entry(request):
    """Use with ``@pytest.mark.parametrize('val_entry', val_entry_params(), indirect=True)``."""
    return {e["name"]: e for e in val_entries()}[request.param]


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


def refined_ca(cg_atoms):
    """[F, N, 3] Å: the CA trace the Backmapper backmaps for every frame of ``cg_atoms`` (one CA bead per residue):
    the input beads, moved by ``refine_ca_trace`` only where no chain of ideal peptide units can follow them, then
    by ``admit_backbone`` where no peptide rotations give a valid backbone."""
    import numpy as np
    import torch

    from latcpb.backmapper import Backmapper
    from latcpb.geometry.ca_trace import admit_backbone

    bm = Backmapper(model="geometric")
    plan = bm.plan(cg_atoms)
    trajectory = cg_atoms.universe.trajectory
    current = trajectory.ts.frame
    ca = np.stack([cg_atoms.positions.copy() for _ in trajectory])
    trajectory[current]
    trace = torch.as_tensor(bm.refine_trace(plan, ca)[0])
    return admit_backbone(trace, plan.layout_tensors)[0].to(trace.dtype).numpy()
