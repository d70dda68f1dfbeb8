"""Many inputs in one call: one output per input in -O OUTDIR (or from a manifest), the model loaded once, a bad
input reported while the others are written (unless fail-fast), and a non-zero exit when any input failed."""
from __future__ import annotations

import os
import shutil

import numpy as np
import pytest

from conftest import quiet_universe, refined_ca
from latcpb.errors import LatcpbInputError
from latcpb.pipeline.jobs import make_engine, make_jobs, read_manifest, run_jobs
from test_parallel import input_times, trajectory_arrays, write_cg_trajectory


@pytest.fixture(scope="module")
def inputs(tmp_path_factory, val_dir):
    """cg.pdb, a.xtc (12 frames), b.xtc (7 frames, other noise), bad.xtc (an XTC of another atom count)."""
    d = tmp_path_factory.mktemp("many")
    top, a = write_cg_trajectory(val_dir, d, n_frames=12, name="a")
    _, b = write_cg_trajectory(val_dir, d, n_frames=7, name="b", noise_seed=1)
    shutil.copy(top, d / "cg.pdb")
    bad = d / "bad.xtc"
    shutil.copy(val_dir / "2JOF.xtc", bad)  # all-atom frames: not the 20 beads of cg.pdb
    return {"dir": d, "top": str(d / "cg.pdb"), "a": a, "b": b, "bad": str(bad)}


OPTIONS = dict(model="geometric", device="cpu", block_frames=5)


def test_outputs_named_after_inputs(tmp_path, inputs):
    jobs = make_jobs([inputs["a"], inputs["b"]], topology=inputs["top"], output_dir=str(tmp_path))
    assert [os.path.basename(j[2]) for j in jobs] == ["a.xtc", "b.xtc"]
    with pytest.raises(LatcpbInputError, match="2 inputs need -O OUTDIR"):
        make_jobs([inputs["a"], inputs["b"]], topology=inputs["top"], output=str(tmp_path / "x.xtc"))
    other = tmp_path / "sub"
    other.mkdir()
    shutil.copy(inputs["a"], other / "a.xtc")
    with pytest.raises(LatcpbInputError, match="would both be written to"):
        make_jobs([inputs["a"], str(other / "a.xtc")], topology=inputs["top"], output_dir=str(tmp_path))


def test_manifest(tmp_path, inputs):
    manifest = inputs["dir"] / "runs.txt"
    manifest.write_text("# input  [topology]\na.xtc cg.pdb\n\nb.xtc   # default topology\n")
    pairs = read_manifest(str(manifest), default_topology="/elsewhere/top.pdb")
    assert pairs == [(inputs["top"], inputs["a"]), ("/elsewhere/top.pdb", inputs["b"])]
    (tmp_path / "bad.txt").write_text("a.xtc cg.pdb extra\n")
    with pytest.raises(LatcpbInputError, match="line 1: expected 'INPUT \\[TOPOLOGY\\]'"):
        read_manifest(str(tmp_path / "bad.txt"))


def test_bad_input_reported_others_written(tmp_path, inputs):
    jobs = make_jobs([inputs["a"], inputs["bad"], inputs["b"]], topology=inputs["top"], output_dir=str(tmp_path))
    seen, backmappers = [], set()
    with make_engine(workers=1) as engine:
        def report(result):  # the engine's Backmapper after each input: one model for all inputs
            seen.append(result)
            backmappers.add(id(engine._state["backmapper"][1]))

        with pytest.raises(LatcpbInputError, match=r"1 of 3 inputs failed \(.*bad.xtc\); the others were written"):
            run_jobs(jobs, engine, report=report, **OPTIONS)
    assert [r.error is None for r in seen] == [True, False, True]
    assert "bad.xtc" in str(seen[1].error) and "atom count does not match" in str(seen[1].error)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["a.pdb", "a.xtc", "b.pdb", "b.xtc"]
    for name, n in (("a", 12), ("b", 7)):
        xyz, times, _ = trajectory_arrays(quiet_universe(tmp_path / f"{name}.pdb", tmp_path / f"{name}.xtc"))
        assert len(xyz) == n and np.array_equal(times, input_times(n))
    b_in = quiet_universe(inputs["top"], inputs["b"])
    b_out = quiet_universe(tmp_path / "b.pdb", tmp_path / "b.xtc")
    assert np.abs(b_out.select_atoms("name CA").positions - refined_ca(b_in.atoms)[0]).max() < 0.01  # b's own
    assert len(backmappers) == 1


def test_fail_fast_stops_at_the_bad_input(tmp_path, inputs):
    jobs = make_jobs([inputs["a"], inputs["bad"], inputs["b"]], topology=inputs["top"], output_dir=str(tmp_path))
    with make_engine(workers=1) as engine, pytest.raises(LatcpbInputError, match="bad.xtc"):
        run_jobs(jobs, engine, fail_fast=True, **OPTIONS)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["a.pdb", "a.xtc"]


def test_cli_many_inputs_with_workers(tmp_path, inputs):
    """latcpb-backmap a.xtc bad.xtc b.xtc --top cg.pdb -O OUTDIR --workers 2: the bad input's error line, the
    others written, exit code 2; the outputs equal those of one process."""
    import subprocess

    from conftest import backmap_command

    env = {**os.environ, "OMP_NUM_THREADS": "1", "MKL_NUM_THREADS": "1"}
    base = [*backmap_command(), inputs["a"], inputs["bad"], inputs["b"], "--top", inputs["top"], "--model",
            "geometric", "--block-frames", "4", "--quiet"]
    two, one = tmp_path / "two", tmp_path / "one"
    two.mkdir()
    one.mkdir()
    proc = subprocess.run([*base, "-O", str(two), "--workers", "2"], env=env, capture_output=True, text=True,
                          timeout=300)
    assert proc.returncode == 2
    lines = [line for line in proc.stderr.splitlines() if line.strip()]
    assert any(line.startswith("latcpb-backmap: error:") and "bad.xtc" in line and "atom count" in line
               for line in lines), lines
    assert lines[-1] == ("latcpb-backmap: error: 1 of 3 inputs failed (" + inputs["bad"] + "); the others were"
                         " written")
    assert sorted(p.name for p in two.iterdir()) == ["a.pdb", "a.xtc", "b.pdb", "b.xtc"]
    proc = subprocess.run([*base[:2], *base[3:], "-O", str(one)], env=env, capture_output=True, text=True,
                          timeout=300)
    assert proc.returncode == 0, proc.stderr
    for name in ("a.xtc", "b.xtc"):
        assert (one / name).read_bytes() == (two / name).read_bytes()
