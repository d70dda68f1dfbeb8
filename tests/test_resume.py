"""Resumable runs: complete blocks in a work folder, ``--resume`` skips them, the output assembled from blocks keeps
every frame's time and box, a work folder of other parameters is refused, and a run killed with SIGKILL then
resumed writes the same file as an uninterrupted run."""
from __future__ import annotations

import os
import signal
import subprocess
import time

import numpy as np
import pytest

from conftest import backmap_command, quiet_universe
from latcpb.errors import LatcpbInputError
from latcpb.pipeline.blocks import BlockResult
from latcpb.pipeline.parallel import BlockEngine
from latcpb.pipeline.resume import work_folder_for
from latcpb.pipeline.runs import backmap_file
from test_parallel import input_boxes, input_times, make_tiny_checkpoint, trajectory_arrays, write_cg_trajectory


@pytest.fixture(scope="module")
def cg_files(tmp_path_factory, val_dir):
    return write_cg_trajectory(val_dir, tmp_path_factory.mktemp("cg"))


@pytest.fixture(scope="module")
def engine():
    with BlockEngine("serial") as serial:
        yield serial


def run(engine, cg_files, out, **kwargs):
    options = dict(model="geometric", device="cpu", block_frames=5)
    return backmap_file(engine, quiet_universe(*cg_files), str(out), **{**options, **kwargs})


def test_times_and_box_survive_block_assembly(tmp_path, cg_files, engine):
    out = tmp_path / "aa.xtc"
    result = run(engine, cg_files, out, samples=2)
    assert result.n_frames == 24 and not os.path.exists(work_folder_for(str(out)))  # 3 blocks, folder removed
    xyz, times, boxes = trajectory_arrays(quiet_universe(tmp_path / "aa.pdb", out))
    assert np.array_equal(times, np.repeat(input_times(12), 2))
    assert np.allclose(boxes, np.repeat(input_boxes(12), 2, axis=0), atol=1e-3)
    left = sorted(p.name for p in tmp_path.iterdir() if not p.name.startswith(".aa.xtc_offsets"))
    assert left == ["aa.pdb", "aa.xtc"]  # no temporary file left (MDAnalysis' offset cache aside)


def test_resume_skips_complete_blocks(tmp_path, cg_files, engine):
    out = tmp_path / "aa.xtc"
    run(engine, cg_files, out, keep_work=True)
    work = work_folder_for(str(out))
    blocks = sorted(n for n in os.listdir(work) if n.startswith("block-"))
    assert blocks == ["block-000000.npz", "block-000001.npz", "block-000002.npz"]
    reference = trajectory_arrays(quiet_universe(tmp_path / "aa.pdb", out))
    # block 0 marked (a resumed run must take it from disk), block 1 gone (must be computed again)
    marked = BlockResult.load(os.path.join(work, blocks[0]))
    marked.positions += 100.0
    marked.save(os.path.join(work, blocks[0]))
    os.unlink(os.path.join(work, blocks[1]))
    run(engine, cg_files, out, resume=True)
    xyz, times, boxes = trajectory_arrays(quiet_universe(tmp_path / "aa.pdb", out))
    assert np.allclose(xyz[:5], reference[0][:5] + 100.0, atol=0.01)
    assert np.array_equal(xyz[5:], reference[0][5:])
    assert np.array_equal(times, reference[1]) and np.array_equal(boxes, reference[2])
    assert not os.path.exists(work)


def test_resume_refuses_other_parameters(tmp_path, cg_files, engine):
    out = tmp_path / "aa.xtc"
    run(engine, cg_files, out, keep_work=True, seed=1)
    with pytest.raises(LatcpbInputError, match=r"other parameters \(seed: 1 then, 2 now\)"):
        run(engine, cg_files, out, resume=True, seed=2)
    with pytest.raises(LatcpbInputError, match=r"block_frames: 5 then, 4 now"):
        run(engine, cg_files, out, resume=True, seed=1, block_frames=4)
    with pytest.raises(LatcpbInputError, match="rerun with --resume"):
        run(engine, cg_files, out, seed=1)
    run(engine, cg_files, out, resume=True, seed=1)  # the same parameters: accepted
    assert not os.path.exists(work_folder_for(str(out)))


def test_bad_frame_leaves_no_output_and_no_work_folder(tmp_path, cg_files, engine):
    from MDAnalysis.coordinates.memory import MemoryReader

    u = quiet_universe(*cg_files)
    coords = np.stack([ts.positions.copy() for ts in u.trajectory])
    coords[11, 2] = np.inf
    u.load_new(coords, format=MemoryReader)
    with pytest.raises(LatcpbInputError, match="frame 11"):
        backmap_file(engine, u, str(tmp_path / "aa.xtc"), model="geometric", block_frames=5, inputs=list(cg_files))
    assert list(tmp_path.iterdir()) == []


def _block_files(work):
    return [n for n in os.listdir(work) if n.startswith("block-")] if os.path.isdir(work) else []


def test_sigkill_then_resume_matches_uninterrupted_run(tmp_path, val_dir):
    """latcpb-backmap --workers 2 killed with SIGKILL after some blocks, then --resume (in one process): the same
    file, times and boxes as an uninterrupted run; no partial output left, the work folder gone. (That the seed
    matters, so that equality is not trivial, is shown in test_parallel.)"""
    top, traj = write_cg_trajectory(val_dir, tmp_path, n_frames=80, name="long")
    model = make_tiny_checkpoint(tmp_path / "tiny.pt")
    args = [*backmap_command(), str(traj), "--top", str(top), "--model", model, "--samples", "2", "--seed", "5",
            "--block-frames", "10", "--batch-size", "5", "--device", "cpu", "--quiet"]
    env = {**os.environ, "OMP_NUM_THREADS": "1", "MKL_NUM_THREADS": "1"}
    killed, reference = tmp_path / "killed", tmp_path / "reference"
    killed.mkdir()
    reference.mkdir()
    out = killed / "aa.xtc"
    work = work_folder_for(str(out))
    proc = subprocess.Popen([*args, "-o", str(out), "--workers", "2"], env=env, stdout=subprocess.DEVNULL,
                            stderr=subprocess.DEVNULL)
    try:
        deadline = time.monotonic() + 180
        while proc.poll() is None and time.monotonic() < deadline and len(_block_files(work)) < 2:
            time.sleep(0.01)
        assert proc.poll() is None, "the run ended before it could be killed"
        proc.send_signal(signal.SIGKILL)
    finally:
        proc.wait(timeout=60)
    assert proc.returncode == -signal.SIGKILL
    done = len(_block_files(work))
    assert 2 <= done < 8, done
    assert not out.exists() and os.path.basename(work) in os.listdir(killed)  # (and the writer's temporary files)

    resumed = subprocess.run([*args, "-o", str(out), "--resume"], env=env, capture_output=True,
                             text=True, timeout=300)
    assert resumed.returncode == 0, resumed.stderr
    full = subprocess.run([*args, "-o", str(reference / "aa.xtc"), "--workers", "1"], env=env,
                          capture_output=True, text=True, timeout=300)
    assert full.returncode == 0, full.stderr
    left = sorted(p.name for p in killed.iterdir() if not p.name.startswith(".aa.xtc_offsets"))
    assert left == ["aa.pdb", "aa.xtc"]  # work folder and stale temporary files removed
    a = trajectory_arrays(quiet_universe(killed / "aa.pdb", out))
    b = trajectory_arrays(quiet_universe(reference / "aa.pdb", reference / "aa.xtc"))
    assert a[0].shape[0] == 160 and np.array_equal(a[0], b[0])
    assert np.array_equal(a[1], np.repeat(input_times(80), 2)) and np.array_equal(a[1], b[1])
    assert np.array_equal(a[2], b[2]) and np.allclose(a[2], np.repeat(input_boxes(80), 2, axis=0), atol=1e-3)
    assert out.read_bytes() == (reference / "aa.xtc").read_bytes()
