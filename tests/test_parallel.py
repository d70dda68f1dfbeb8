"""Blocks over workers: the same coordinates, times and boxes for the serial path, 1 and 2 local worker processes
and a dask.distributed LocalCluster; block seeds; bounded work in flight; a bad frame named through a worker.

The stochastic generator is a real LatCPB network (the tiny config, randomly initialised, saved as a checkpoint in
tmp), so the seed matters and no trained weights are needed."""
from __future__ import annotations

import functools
import json
import logging
import os
import time
import warnings
from importlib import resources

import MDAnalysis as mda
import numpy as np
import pytest
import torch
from MDAnalysis.coordinates.memory import MemoryReader

from conftest import quiet_universe, refined_ca
from latcpb.errors import LatcpbInputError
from latcpb.pipeline.blocks import block_seed, selected_frames, split_blocks
from latcpb.pipeline.parallel import BlockEngine
from latcpb.pipeline.runs import backmap_universe, make_spec

CG_FRAMES = 12


def make_tiny_checkpoint(path):
    """A randomly initialised LatCPB network of the tiny config, saved as a checkpoint (stochastic sampling)."""
    from latcpb.model.latcpb_model import LatCPB
    from latcpb.training.checkpoint import save_checkpoint
    from latcpb.training.trainer import full_config

    config = full_config(json.loads(resources.files("latcpb").joinpath("configs", "tiny.json").read_text()))
    torch.manual_seed(0)
    save_checkpoint(str(path), {"config": config, "model": LatCPB(config["model"]).state_dict()})
    return str(path)


def input_times(n):
    """Uneven times (ps) of the CG test trajectories: 100, 102.5, 105, 110, 115, ..."""
    return np.array([100.0 + 2.5 * min(k, 2) + 5.0 * max(k - 2, 0) for k in range(n)])


def input_boxes(n):
    """A box that grows a little every frame [n, 6] (Å, degrees)."""
    return np.array([[40.0 + 0.5 * k, 41.0, 42.0 + 0.25 * k, 90.0, 90.0, 90.0] for k in range(n)],
                    dtype=np.float32)


def write_cg_trajectory(val_dir, out_dir, n_frames=CG_FRAMES, name="cg", noise_seed=0):
    """CA-only 2JOF CG files (cg.pdb + cg.xtc) of ``n_frames`` frames (the 28 frames cycled, with 0.1 Å noise),
    with the uneven times of ``input_times`` and the growing box of ``input_boxes``."""
    u = quiet_universe(val_dir / "2JOF.pdb", val_dir / "2JOF.xtc")
    beads = u.select_atoms("name CA")
    coords = np.stack([u.trajectory[k % len(u.trajectory)].positions[beads.ix] for k in range(n_frames)])
    coords = coords + np.random.default_rng(noise_seed).normal(0, 0.1, coords.shape)
    cg = mda.Merge(beads)
    cg.load_new(coords.astype(np.float32), format=MemoryReader)
    top, traj = os.path.join(out_dir, f"{name}.pdb"), os.path.join(out_dir, f"{name}.xtc")
    times, boxes = input_times(n_frames), input_boxes(n_frames)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        cg.trajectory[0]
        cg.atoms.write(top)
        with mda.Writer(traj, n_atoms=len(cg.atoms)) as w:
            for k, ts in enumerate(cg.trajectory):
                ts.time, ts.dimensions = times[k], boxes[k]
                w.write(cg.atoms)
    return top, traj


def trajectory_arrays(u):
    """(positions [F, A, 3], times [F], boxes [F, 6] or None) of a Universe."""
    xyz, times, boxes = [], [], []
    for ts in u.trajectory:
        xyz.append(ts.positions.copy())
        times.append(ts.time)
        boxes.append(None if ts.dimensions is None else ts.dimensions.copy())
    return np.stack(xyz), np.array(times), None if boxes[0] is None else np.stack(boxes)


@pytest.fixture(scope="module")
def tiny_model(tmp_path_factory):
    return make_tiny_checkpoint(tmp_path_factory.mktemp("model") / "tiny.pt")


@pytest.fixture(scope="module")
def cg_files(tmp_path_factory, val_dir):
    return write_cg_trajectory(val_dir, tmp_path_factory.mktemp("cg"))


OPTIONS = dict(samples=2, batch_size=2, block_frames=5, device="cpu")


@pytest.fixture(scope="module")
def serial_result(cg_files, tiny_model):
    u = quiet_universe(*cg_files)
    return trajectory_arrays(backmap_universe(u, model=tiny_model, seed=7, backend="serial", **OPTIONS))


def test_block_seed():
    assert block_seed(None, 10) is None
    seeds = {block_seed(7, f) for f in range(0, 1000, 5)} | {block_seed(8, 0)}
    assert len(seeds) == 201  # distinct streams for every block and seed
    assert block_seed(7, 10) == block_seed(7, 10) and 0 <= block_seed(2**63, 10) < 2**63
    blocks = split_blocks(selected_frames(100, 3, None, 7), 4)
    assert [b.first_frame for b in blocks] == [3, 31, 59, 87] and len(blocks[-1]) == 2


def test_serial_keeps_times_boxes_and_samples(serial_result, cg_files):
    xyz, times, boxes = serial_result
    assert xyz.shape[0] == 2 * CG_FRAMES and np.isfinite(xyz).all()
    assert np.allclose(boxes, np.repeat(input_boxes(CG_FRAMES), 2, axis=0), atol=1e-3)
    # the two samples of a frame differ (the seed matters), the CA is the input's
    assert np.abs(xyz[0] - xyz[1]).max() > 0.05
    u = quiet_universe(*cg_files)
    ca_in = refined_ca(u.atoms)   # the input beads, moved where no ideal peptide chain follows them
    aa_ca = xyz[:, [i for i, n in enumerate(_names(cg_files)) if n == "CA"]]
    assert np.abs(aa_ca - np.repeat(ca_in, 2, axis=0)).max() < 0.01


def _names(cg_files):
    from latcpb.pipeline.runs import backmap_universe as bu
    return list(bu(quiet_universe(*cg_files), model="geometric", stop=1).atoms.names)


@pytest.fixture(scope="module")
def pool():
    """Two local single-threaded worker processes, shared by the tests of this module."""
    with BlockEngine("multiprocessing", n_workers=2) as engine:
        yield engine


def test_local_processes_match_serial(serial_result, cg_files, tiny_model, pool):
    u = quiet_universe(*cg_files)
    xyz, times, boxes = trajectory_arrays(backmap_universe(u, model=tiny_model, seed=7, backend=pool, **OPTIONS))
    assert np.array_equal(xyz, serial_result[0])
    assert np.array_equal(times, serial_result[1]) and np.array_equal(boxes, serial_result[2])
    other = trajectory_arrays(backmap_universe(u, model=tiny_model, seed=8, backend=pool, **OPTIONS))[0]
    assert np.abs(other - xyz).max() > 0.05  # a different seed gives other samples: the comparison can fail
    # blocks of other sizes cut the random streams elsewhere: other samples, same CA
    rebl = trajectory_arrays(backmap_universe(u, model=tiny_model, seed=7, backend=pool,
                                              **{**OPTIONS, "block_frames": 4}))[0]
    assert np.abs(rebl[10:] - xyz[10:]).max() > 0.05


def test_dask_local_cluster_matches_serial(serial_result, cg_files, tiny_model):
    from distributed import Client, LocalCluster

    u = quiet_universe(*cg_files)
    with LocalCluster(n_workers=2, processes=True, threads_per_worker=1, dashboard_address=None,
                      silence_logs=logging.ERROR) as cluster, Client(cluster) as client:
        xyz, times, boxes = trajectory_arrays(backmap_universe(u, model=tiny_model, seed=7, client=client,
                                                               **OPTIONS))
        # a second run on the same cluster: the workers keep their model, the run has its own input frames
        again = trajectory_arrays(backmap_universe(u, model=tiny_model, seed=7, client=client, start=5, **OPTIONS))
    assert np.array_equal(xyz, serial_result[0])
    assert np.array_equal(times, serial_result[1]) and np.array_equal(boxes, serial_result[2])
    assert again[0].shape[0] == 2 * (CG_FRAMES - 5) and np.array_equal(again[1], serial_result[1][10:])


def record_block(folder, plan, result):
    """postprocess hook: leaves a file per computed block (a real side effect seen by the test)."""
    open(os.path.join(folder, f"block-{result.index}"), "w").close()
    return result


def test_blocks_in_flight_are_bounded(tmp_path, cg_files, pool):
    """While the consumer holds the first result, workers compute at most max_in_flight blocks."""
    u = quiet_universe(*cg_files)
    spec, frames = make_spec(u, postprocess=functools.partial(record_block, str(tmp_path)), model="geometric",
                             device="cpu")
    blocks = split_blocks(frames, 1)  # 12 blocks
    pool.max_in_flight = 3
    try:
        results = pool.map(spec, blocks)
        first = next(results)
        time.sleep(2.0)  # ample time for the workers to run ahead if they could
        done_while_held = len(os.listdir(tmp_path))
        rest = list(results)
    finally:
        pool.max_in_flight = 4
    assert first.index == 0 and [r.index for r in rest] == list(range(1, 12))
    assert 2 <= done_while_held <= 4  # the first, plus max_in_flight submitted after it at most
    assert len(os.listdir(tmp_path)) == 12


def test_bad_frame_is_named_through_a_worker(cg_files, pool):
    u = quiet_universe(*cg_files)
    coords = np.stack([ts.positions.copy() for ts in u.trajectory])
    coords[9, 4] = np.nan
    u.load_new(coords, format=MemoryReader)
    with pytest.raises(LatcpbInputError, match="frame 9: non-finite"):
        backmap_universe(u, model="geometric", backend=pool, block_frames=3)


def test_top_level_api_takes_backend_and_n_workers(serial_result, cg_files, tiny_model):
    """``latcpb.backmap_universe(u, backend=..., n_workers=...)`` (MDAnalysis 2.8 convention) runs the blocks on
    worker processes and gives the serial result."""
    import latcpb

    u = quiet_universe(*cg_files)
    aa = latcpb.backmap_universe(u, model=tiny_model, seed=7, backend="multiprocessing", n_workers=2, **OPTIONS)
    xyz, times, boxes = trajectory_arrays(aa)
    assert np.array_equal(xyz, serial_result[0])
    assert np.array_equal(times, serial_result[1]) and np.array_equal(boxes, serial_result[2])


def _malloc_trim_setting():
    return os.environ.get("MALLOC_TRIM_THRESHOLD_")


def test_dask_workers_started_by_latcpb_keep_glibc_defaults():
    """dask's nanny sets MALLOC_TRIM_THRESHOLD_ for its workers, which made backmapping there 3x slower; the
    LocalCluster of BlockEngine("dask") is started without it (and keeps dask's one-thread variables)."""
    with BlockEngine("dask", n_workers=1) as engine:
        seen = engine._client.run(_malloc_trim_setting)
        threads = engine._client.run(os.environ.get, "OMP_NUM_THREADS")
    assert list(seen.values()) == [None] and list(threads.values()) == ["1"]
