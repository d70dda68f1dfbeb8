"""Parallel relaxation support: the platform order (CUDA, OpenCL, CPU) and ``relax_block``, the picklable entry
point that worker processes call (one OpenMM Context per worker, reused across blocks).

Data: tests/data/mini/CLN025.pdb (a copy of /work/shared/data/val/CLN025.pdb, see tests/data/README.md).
"""
import io
import multiprocessing
import os
import warnings
from concurrent.futures import ProcessPoolExecutor

import numpy as np
import pytest

mda = pytest.importorskip("MDAnalysis")
pytest.importorskip("openmm")

from latcpb.errors import LatcpbInputError  # noqa: E402
from latcpb_openmm import Relaxer, choose_platform, relax_block  # noqa: E402
from latcpb_openmm.relaxation import PLATFORM_ORDER, available_platforms  # noqa: E402

CLN025 = os.path.join(os.path.dirname(__file__), "data", "mini", "CLN025.pdb")
BOX = [50.0, 50.0, 50.0, 90.0, 90.0, 90.0]


def universe(path):
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        return mda.Universe(path)


def test_platform_order_and_override():
    names = available_platforms()
    known = [n for n in names if n in PLATFORM_ORDER]
    assert known == sorted(known, key=PLATFORM_ORDER.index) and "CPU" in names
    assert choose_platform(None).getName() == names[0]
    assert choose_platform("CPU").getName() == "CPU"
    with pytest.raises(LatcpbInputError, match="not available"):
        choose_platform("NoSuchPlatform")
    relaxer = Relaxer(universe(CLN025).atoms, platform="CPU", max_iterations=5).prepare()
    assert relaxer.platform_name == "CPU"
    default = Relaxer(universe(CLN025).atoms, max_iterations=5).prepare()
    assert default.platform_name in names  # the fastest that could open a context here


@pytest.fixture(scope="module")
def block():
    u = universe(CLN025)
    text = io.StringIO()
    from MDAnalysis.lib.util import NamedStream
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        u.atoms.write(NamedStream(text, "top.pdb"))
    rng = np.random.default_rng(1)
    positions = (u.atoms.positions[None] + rng.normal(scale=0.15, size=(4, len(u.atoms), 3))).astype(np.float32)
    times = np.array([500.0, 510.0, 520.0, 530.0])
    dims = np.tile(np.asarray(BOX, dtype=np.float32), (4, 1))
    return text.getvalue(), positions, times, dims


def test_relax_block_same_result_whatever_the_blocks(block):
    top, positions, times, dims = block
    whole, reports = relax_block(top, positions, times, dims, frames=[10, 11, 12, 13], threads=1,
                                 max_iterations=100)
    assert whole.shape == positions.shape and whole.dtype == np.float32
    assert [r.frame for r in reports] == [10, 11, 12, 13] and [r.time for r in reports] == list(times)
    assert all(r.status == "ok" and r.energy_after < r.energy_before for r in reports)
    first, _ = relax_block(top, positions[:1], times[:1], dims[:1], frames=[10], threads=1, max_iterations=100)
    rest, _ = relax_block(top, positions[1:], times[1:], dims[1:], frames=[11, 12, 13], threads=1,
                          max_iterations=100)
    np.testing.assert_array_equal(np.concatenate([first, rest]), whole)  # threads=1: bit-identical


def test_relax_block_in_a_worker_process_and_with_hydrogens(block):
    top, positions, times, dims = block
    local, _ = relax_block(top, positions, times, dims, threads=1, max_iterations=100)
    with ProcessPoolExecutor(1, mp_context=multiprocessing.get_context("spawn")) as pool:
        parts = [pool.submit(relax_block, top, positions[k:k + 2], times[k:k + 2], dims[k:k + 2],
                             frames=[k, k + 1], threads=1, max_iterations=100) for k in (0, 2)]
        results = [p.result(timeout=300) for p in parts]
    remote = np.concatenate([r.positions for r in results])
    assert [r.frame for res in results for r in res.reports] == [0, 1, 2, 3]
    np.testing.assert_array_equal(remote, local)
    with_h = relax_block(top, positions[:2], times[:2], dims[:2], hydrogens=True, max_iterations=50)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        from MDAnalysis.lib.util import NamedStream
        hydrogenated = mda.Universe(NamedStream(io.StringIO(with_h.topology_pdb), "h.pdb"), format="PDB")
    assert with_h.positions.shape == (2, len(hydrogenated.atoms), 3)
    assert len(hydrogenated.select_atoms("element H")) > 50
    np.testing.assert_allclose(hydrogenated.dimensions, BOX, rtol=1e-4)
