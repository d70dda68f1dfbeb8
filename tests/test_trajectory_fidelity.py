"""Output trajectories stay MD trajectories: every output frame keeps the time, step and box of its input frame in
every format that holds them, under --start/--step and --samples, through the CLI, ``backmap_universe`` and
``Backmapper.iter_backmap``; error messages name the input's frame numbers; CLI and API agree bit for bit.

Fixtures: tests/data/cg (made by tests/data/cg/make_fixtures.py from the small validation set)."""
from __future__ import annotations

import warnings
from pathlib import Path

import MDAnalysis as mda
import numpy as np
import pytest
from click.testing import CliRunner

import latcpb
from conftest import quiet_universe
from latcpb.cli.backmap import main

CG = Path(__file__).resolve().parent / "data" / "cg"
TRP_TIMES = 1000.0 + 10.0 * np.arange(12)  # ps, trp_box.xtc
BOX = np.array([60, 60, 60, 90, 90, 90], dtype=np.float32)


def run_cli(args, expect_exit=0):
    result = CliRunner().invoke(main, [*map(str, args), "--quiet"])
    assert result.exit_code == expect_exit, (result.exit_code, result.stderr, result.exception)
    return result


def read_output(path: Path):
    return quiet_universe(path) if path.suffix in (".pdb", ".gro") else quiet_universe(path.with_suffix(".pdb"), path)


@pytest.fixture(scope="module")
def trp_box():
    return quiet_universe(CG / "trp_box.pdb", CG / "trp_box.xtc")


def test_fixture_has_times_and_box(trp_box):
    assert np.allclose([ts.time for ts in trp_box.trajectory], TRP_TIMES)
    assert all(np.allclose(ts.dimensions, BOX) for ts in trp_box.trajectory)


@pytest.mark.parametrize("ext", ["xtc", "trr", "dcd", "nc", "pdb"])
def test_times_and_box_in_every_format(tmp_path, ext):
    """Batches of 5 frames (12 frames in all) no longer restart the clock: times 1000-1110 ps and the 60 Å box
    come back from every trajectory format (PDB holds no time: its models carry the box)."""
    out = tmp_path / f"aa.{ext}"
    run_cli([CG / "trp_box.xtc", "--top", CG / "trp_box.pdb", "-o", out, "--model", "geometric",
             "--batch-size", "5"])
    aa = read_output(out)
    assert len(aa.trajectory) == 12
    if ext != "pdb":
        assert np.allclose([ts.time for ts in aa.trajectory], TRP_TIMES, atol=1e-3)
        assert abs(aa.trajectory.dt - 10.0) < 1e-4
    for ts in aa.trajectory:
        assert ts.dimensions is not None and np.allclose(ts.dimensions, BOX, atol=1e-3)
    # the topology beside it (or the PDB itself) has the real CRYST1, in every model
    pdb_text = (out if ext == "pdb" else out.with_suffix(".pdb")).read_text()
    cryst = [line for line in pdb_text.splitlines() if line.startswith("CRYST1")]
    models = [line for line in pdb_text.splitlines() if line.startswith("MODEL")]
    assert len(cryst) == len(models) >= 1
    assert all(line.startswith("CRYST1   60.000   60.000   60.000  90.00  90.00  90.00") for line in cryst)


def test_xtc_keeps_md_steps(tmp_path):
    """XTC output carries the input's MD step numbers too."""
    u = quiet_universe(CG / "trp_box.pdb", CG / "trp_box.xtc")
    steps_in = [ts.data.get("step") for ts in u.trajectory]
    out = tmp_path / "aa.xtc"
    run_cli([CG / "trp_box.xtc", "--top", CG / "trp_box.pdb", "-o", out, "--model", "geometric"])
    assert [ts.data.get("step") for ts in read_output(out).trajectory] == steps_in


def test_gro_output_keeps_box(tmp_path):
    out = tmp_path / "aa.gro"
    run_cli([CG / "trp_box.xtc", "--top", CG / "trp_box.pdb", "-o", out, "--model", "geometric", "--start", "4",
             "--stop", "5"])
    assert np.allclose(quiet_universe(out).dimensions, BOX, atol=1e-2)


def test_start_step_keep_times(tmp_path):
    out = tmp_path / "aa.xtc"
    run_cli([CG / "trp_box.xtc", "--top", CG / "trp_box.pdb", "-o", out, "--model", "geometric",
             "--start", "2", "--step", "3", "--batch-size", "2"])
    aa = read_output(out)
    assert np.allclose([ts.time for ts in aa.trajectory], TRP_TIMES[2::3])
    assert abs(aa.trajectory.dt - 30.0) < 1e-4


def test_samples_are_consecutive_and_share_time(tmp_path, trp_box):
    """--samples 3: the 3 samples of a frame are consecutive output frames with its time and box; the
    stochastic model gives 3 different structures around the same CA trace."""
    out = tmp_path / "aa.trr"
    run_cli([CG / "trp_box.xtc", "--top", CG / "trp_box.pdb", "-o", out, "--samples", "3", "--seed", "1",
             "--stop", "4", "--batch-size", "3"])
    aa = read_output(out)
    assert len(aa.trajectory) == 12
    assert np.allclose([ts.time for ts in aa.trajectory], np.repeat(TRP_TIMES[:4], 3))
    first = [aa.trajectory[k].positions.copy() for k in range(3)]
    assert not np.allclose(first[0], first[1])
    for k in range(12):
        aa.trajectory[k]
        trp_box.trajectory[k // 3]
        ca_out, ca_in = aa.select_atoms("name CA").positions, trp_box.atoms.positions
        # chains are made whole, so compare CA-CA vectors, not absolute positions
        assert np.abs(np.diff(ca_out, axis=0) - _whole_diff(ca_in, BOX)).max() < 0.02


def _whole_diff(xyz, box):
    d = np.diff(xyz, axis=0)
    return d - box[:3] * np.round(d / box[:3])


def test_backmap_universe_times_dt_dimensions(trp_box):
    aa = latcpb.backmap_universe(trp_box, model="geometric", batch_size=5)
    assert len(aa.trajectory) == len(trp_box.trajectory)
    assert np.allclose([ts.time for ts in aa.trajectory], [ts.time for ts in trp_box.trajectory])
    assert aa.trajectory.dt == pytest.approx(trp_box.trajectory.dt)
    for ts_aa, ts_cg in zip(aa.trajectory, trp_box.trajectory):
        assert np.allclose(ts_aa.dimensions, ts_cg.dimensions)
    # a copy of the Universe keeps them too
    copy = aa.copy()
    copy.trajectory[7]
    assert copy.trajectory.time == pytest.approx(1070.0)
    import pickle  # worker processes get them through pickle
    again = pickle.loads(pickle.dumps(aa))
    assert [ts.time for ts in again.trajectory] == [ts.time for ts in aa.trajectory]


def test_iter_backmap_frame_batches(trp_box):
    bm = latcpb.Backmapper(model="geometric", batch_size=4)
    batches = list(bm.iter_backmap(trp_box, start=1, step=2))
    assert [list(b.frames) for b in batches] == [[1, 3, 5, 7], [9, 11]]
    assert np.allclose(np.concatenate([b.times for b in batches]), TRP_TIMES[1::2])
    assert all(b.dimensions.shape == (len(b.frames), 6) and np.allclose(b.dimensions, BOX) for b in batches)
    plan, frames, positions = batches[0]  # the older tuple form still unpacks
    assert positions.shape == (4, plan.n_atoms, 3)
    u = batches[1].universe()
    assert [ts.time for ts in u.trajectory] == [1090.0, 1110.0]
    assert np.allclose(u.dimensions, BOX)


def test_no_box_gives_no_cryst1(tmp_path):
    """An input without a box: no CRYST1 (MDAnalysis would write a 1 Å unit cell, OpenMM a 0.1 nm box)."""
    openmm_app = pytest.importorskip("openmm.app")
    out = tmp_path / "aa.pdb"
    run_cli([CG / "soft_spacing.pdb", "-o", out, "--model", "geometric"])
    text = out.read_text()
    assert "CRYST1" not in text
    assert quiet_universe(out).dimensions is None
    assert openmm_app.PDBFile(str(out)).topology.getPeriodicBoxVectors() is None


def test_openmm_reads_the_box(tmp_path):
    openmm_app = pytest.importorskip("openmm.app")
    out = tmp_path / "aa.pdb"
    run_cli([CG / "trp_box.pdb", "-o", out, "--model", "geometric"])
    vectors = openmm_app.PDBFile(str(out)).topology.getPeriodicBoxVectors()
    assert vectors is not None
    import openmm.unit as unit
    assert abs(vectors[0][0].value_in_unit(unit.nanometer) - 6.0) < 1e-6


def _damaged_copy(tmp_path, frame, edit):
    """trp_box with one frame changed by edit(xyz [N, 3]) -> new xyz, written as DCD (keeps NaN)."""
    u = quiet_universe(CG / "trp_box.pdb", CG / "trp_box.xtc")
    path = tmp_path / "damaged.dcd"
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        with mda.Writer(str(path), n_atoms=len(u.atoms)) as w:
            for ts in u.trajectory:
                if ts.frame == frame:
                    u.atoms.positions = edit(u.atoms.positions.copy())
                w.write(u.atoms)
    return path


@pytest.mark.parametrize("what", ["nan", "spacing"])
def test_error_names_input_frame_under_start_step(tmp_path, what):
    """Frame 7 damaged; --start 1 --step 3 reads input frames 1, 4, 7, 10: the error says frame 7."""
    def edit(xyz):
        if what == "nan":
            xyz[5] = np.nan
        else:
            xyz[12:] += np.array([0.0, 0.0, 9.0], dtype=np.float32)  # beads 12-19 pulled 9 Å away
        return xyz
    path = _damaged_copy(tmp_path, 7, edit)
    out_dir = tmp_path / "out"
    out_dir.mkdir()
    result = run_cli([path, "--top", CG / "trp_box.pdb", "-o", out_dir / "aa.xtc", "--model", "geometric",
                      "--start", "1", "--step", "3", "--batch-size", "2"], expect_exit=2)
    line = result.stderr.strip().splitlines()[-1]
    assert "frame 7:" in line, line
    assert ("non-finite" in line) if what == "nan" else ("Å apart" in line and "PRO 12" in line and "SER 13" in line)
    assert list(out_dir.iterdir()) == []


def test_api_and_cli_identical(tmp_path):
    """Same input (two chains, a box, wrapped frames) and seed: the CLI's output file (NC, float32) holds exactly
    the coordinates of ``backmap_universe``, with the shipped (stochastic) model and several samples."""
    u = quiet_universe(CG / "dimer_box.gro", CG / "dimer_box.xtc")
    api = latcpb.backmap_universe(u, seed=5, samples=2, stop=6)
    out = tmp_path / "aa.nc"
    run_cli([CG / "dimer_box.xtc", "--top", CG / "dimer_box.gro", "-o", out, "--seed", "5", "--samples", "2",
             "--stop", "6"])
    cli = read_output(out)
    assert len(cli.trajectory) == len(api.trajectory) == 12
    for ts_cli, ts_api in zip(cli.trajectory, api.trajectory):
        assert np.array_equal(ts_cli.positions, ts_api.positions)
        assert ts_cli.time == pytest.approx(ts_api.time)


def test_plan_reused_over_blocks(trp_box):
    """``plan_trajectory`` once, then blocks of frames with ``iter_backmap(plan=...)``: the same chains, frames,
    times and coordinates as one pass."""
    bm = latcpb.Backmapper(model="geometric", batch_size=4)
    whole = list(bm.iter_backmap(trp_box))
    plan = bm.plan_trajectory(trp_box)
    blocks = list(bm.iter_backmap(trp_box, stop=6, plan=plan)) + list(bm.iter_backmap(trp_box, start=6, plan=plan))
    assert all(b.plan is plan for b in blocks)
    assert np.array_equal(np.concatenate([b.frames for b in blocks]), np.arange(12))
    assert np.allclose(np.concatenate([b.times for b in blocks]), TRP_TIMES)
    # (other batch compositions: float rounding of batched ops may differ in the last bits)
    blocked, single = (np.concatenate([b.positions for b in x]) for x in (blocks, whole))
    assert np.abs(blocked - single).max() < 1e-3


def test_box_changing_every_frame(tmp_path, trp_box):
    """An NPT-like trajectory (the box grows by 0.5 Å a frame): each output frame has its own input frame's box."""
    boxes = np.array([[60 + 0.5 * k, 61 + 0.25 * k, 62, 90, 90, 90] for k in range(12)], dtype=np.float32)
    trp = quiet_universe(CG.parent / "val" / "2JOF.pdb", CG.parent / "val" / "2JOF.xtc")  # not wrapped
    ca = trp.select_atoms("name CA")
    path = tmp_path / "npt.xtc"
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        with mda.Writer(str(path), n_atoms=len(ca)) as w:
            for ts in trp.trajectory[:12]:
                ts.dimensions = boxes[ts.frame]
                w.write(ca)
    out = tmp_path / "aa.xtc"
    run_cli([path, "--top", CG / "trp_box.pdb", "-o", out, "--model", "geometric", "--batch-size", "5",
             "--samples", "2"])
    got = np.stack([ts.dimensions.copy() for ts in read_output(out).trajectory])
    assert np.allclose(got, np.repeat(boxes, 2, axis=0), atol=1e-3)
    aa = latcpb.backmap_universe(quiet_universe(CG / "trp_box.pdb", path), model="geometric", batch_size=5)
    assert np.allclose(np.stack([ts.dimensions.copy() for ts in aa.trajectory]), boxes, atol=1e-3)


def test_dcd_with_samples_notes_its_uniform_times(tmp_path):
    """DCD stores start + k * dt only: with --samples 2 the CLI says so in one note (other formats need none)."""
    result = run_cli([CG / "trp_box.xtc", "--top", CG / "trp_box.pdb", "-o", tmp_path / "aa.dcd", "--model",
                      "geometric", "--samples", "2", "--stop", "3"])
    notes = [line for line in result.stderr.splitlines() if "note:" in line]
    assert len(notes) == 1 and "DCD" in notes[0] and "--samples" in notes[0]
    result = run_cli([CG / "trp_box.xtc", "--top", CG / "trp_box.pdb", "-o", tmp_path / "aa.xtc", "--model",
                      "geometric", "--samples", "2", "--stop", "3"])
    assert "note:" not in result.stderr
