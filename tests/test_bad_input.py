"""Bad-input corpus for ``latcpb-backmap``, built in tmp from real files: every case exits 2 with one line on
stderr naming what is at fault, no traceback (unless --debug) and no file left in the output directory."""
from __future__ import annotations

import os
import re
import subprocess

import numpy as np
import pytest
from click.testing import CliRunner

from conftest import backmap_command, quiet_universe, write_cg
from latcpb.cli.backmap import main

PROG = "latcpb-backmap: error: "


@pytest.fixture(scope="module")
def trp(tmp_path_factory, val_dir):
    """2JOF (Trp-cage, 20 residues, 28 frames) as CA-only cg.pdb + cg.xtc, and the all-atom Universe."""
    d = tmp_path_factory.mktemp("trp")
    u = quiet_universe(val_dir / "2JOF.pdb", val_dir / "2JOF.xtc")
    top, traj = write_cg(u, d)
    return {"dir": d, "u": u, "top": str(top), "traj": str(traj)}


def visible_lines(text):
    """Lines a terminal would show (progress bars redrawn with carriage returns count as their last state)."""
    return [line.rsplit("\r", 1)[-1] for line in text.split("\n") if line.rsplit("\r", 1)[-1].strip()]


def run_bad(tmp_path, args, expect, out_name="aa.xtc", quiet=True):
    out_dir = tmp_path / "out"
    out_dir.mkdir(exist_ok=True)
    output = ["-o", str(out_dir / out_name)] if "-o" not in args else []
    result = CliRunner().invoke(main, [*args, *output, "--model", "geometric", *(["--quiet"] if quiet else [])])
    assert result.exit_code == 2, (result.exit_code, result.stderr, result.exception)
    lines = visible_lines(result.stderr)
    assert len(lines) == 1, result.stderr
    assert lines[0].startswith(PROG)
    for token in expect:
        assert token in lines[0], (token, lines[0])
    assert "Traceback" not in result.stderr and "Traceback" not in result.stdout
    left = sorted(os.listdir(out_dir))
    assert left == [], left
    return lines[0]


def _edit_frame(value, frame=20, atom=3):
    def edit(cg):
        cg.trajectory.coordinate_array[frame, atom] = value
    return edit


def test_atom_count_mismatch(tmp_path, trp, val_dir):
    _, short = write_cg(quiet_universe(val_dir / "CLN025.pdb"), tmp_path, name="cln")
    run_bad(tmp_path, [str(short), "--top", trp["top"]], [str(short), "atom count", "20 atoms"])


def test_select_matches_nothing(tmp_path, trp):
    run_bad(tmp_path, [trp["traj"], "--top", trp["top"], "--select", "name BB"], ["--select", "name BB"])


def test_invalid_selection_syntax(tmp_path, trp):
    run_bad(tmp_path, [trp["traj"], "--top", trp["top"], "--select", "name CA and ((("], ["--select"])


def test_unknown_residue_in_chain(tmp_path, trp):
    def edit(cg):
        cg.residues[9].resname = "XYZ"
    top, traj = write_cg(trp["u"], tmp_path, edit=edit)
    resid = trp["u"].residues[9].resid
    run_bad(tmp_path, [str(traj), "--top", str(top)], [str(traj), f"XYZ {resid}"])


def test_one_residue_chain(tmp_path, trp):
    def edit(cg):
        cg.add_TopologyAttr("chainIDs", ["A"] * 19 + ["B"])
        cg.add_TopologyAttr("segids", ["A"])
    top, traj = write_cg(trp["u"], tmp_path, edit=edit, traj_ext=None)
    last = trp["u"].residues[-1]
    run_bad(tmp_path, [str(top)], [str(top), f"{last.resname} {last.resid}", "chain B", "1 residue"],
            out_name="aa.pdb")


def test_duplicated_atoms(tmp_path, trp):
    lines = open(trp["top"]).read().splitlines(keepends=True)
    atoms = [i for i, line in enumerate(lines) if line.startswith("ATOM")]
    lines.insert(atoms[5] + 1, lines[atoms[5]])  # the CA of residue 6 twice
    top = tmp_path / "dup.pdb"
    top.write_text("".join(lines))
    res = trp["u"].residues[5]
    run_bad(tmp_path, [str(top)], [str(top), f"{res.resname} {res.resid}", "2 atoms"], out_name="aa.pdb")


@pytest.mark.parametrize("value,what", [(np.nan, "non-finite"), (1e6, "absurd")])
def test_bad_coordinates_in_a_frame(tmp_path, trp, value, what):
    top, traj = write_cg(trp["u"], tmp_path, traj_ext="dcd", edit=_edit_frame(value))
    run_bad(tmp_path, [str(traj), "--top", str(top)], [str(traj), "frame 20", what])


def test_truncated_xtc(tmp_path, trp):
    data = open(trp["traj"], "rb").read()
    cut = tmp_path / "cut.xtc"
    cut.write_bytes(data[:-20])  # the last frame loses its tail
    run_bad(tmp_path, [str(cut), "--top", trp["top"]], [str(cut), "27 of 28"])


def test_truncated_xtc_partial_last_frame(tmp_path, trp):
    data = open(trp["traj"], "rb").read()
    cut = tmp_path / "cut.xtc"
    cut.write_bytes(data[:-300])  # 26 whole frames + the first bytes of frame 27
    run_bad(tmp_path, [str(cut), "--top", trp["top"]], [str(cut)])


@pytest.mark.parametrize("which", ["trajectory", "topology"])
def test_empty_files(tmp_path, trp, which):
    empty = tmp_path / ("empty.xtc" if which == "trajectory" else "empty.pdb")
    empty.write_bytes(b"")
    args = [str(empty), "--top", trp["top"]] if which == "trajectory" else [trp["traj"], "--top", str(empty)]
    run_bad(tmp_path, args, [str(empty), "empty"])


def test_trajectory_without_frames(tmp_path, trp):
    import MDAnalysis as mda
    path = tmp_path / "noframes.dcd"
    with mda.Writer(str(path), n_atoms=20):
        pass
    if path.stat().st_size == 0:
        pytest.skip("MDAnalysis wrote a 0-byte file (covered by test_empty_files)")
    run_bad(tmp_path, [str(path), "--top", trp["top"]], [str(path)])


@pytest.mark.parametrize("ext", ["pdb", "gro"])
def test_garbage_topology(tmp_path, ext):
    path = tmp_path / f"garbage.{ext}"
    path.write_bytes(np.random.default_rng(7).integers(0, 256, size=4096, dtype=np.uint8).tobytes())
    run_bad(tmp_path, [str(path)], [str(path)], out_name="aa.pdb")


def test_missing_input(tmp_path, trp):
    missing = tmp_path / "nothere.xtc"
    run_bad(tmp_path, [str(missing), "--top", trp["top"]], [str(missing), "no such file"])


def test_missing_output_directory(tmp_path, trp):
    run_bad(tmp_path, [trp["top"], "-o", str(tmp_path / "out" / "sub" / "aa.pdb")], ["sub", "does not exist"])


def test_output_under_a_regular_file(tmp_path, trp):
    blocker = tmp_path / "somefile.txt"
    blocker.write_text("x")
    run_bad(tmp_path, [trp["top"], "-o", str(blocker / "aa.pdb")], ["somefile.txt"])
    assert os.listdir(tmp_path) == ["somefile.txt", "out"] or sorted(os.listdir(tmp_path)) == ["out", "somefile.txt"]


@pytest.mark.skipif(hasattr(os, "geteuid") and os.geteuid() == 0, reason="root ignores directory permissions")
def test_unwritable_output_directory(tmp_path, trp):
    locked = tmp_path / "out"
    locked.mkdir()
    locked.chmod(0o500)
    try:
        run_bad(tmp_path, [trp["top"]], ["not writable"], out_name="aa.pdb")
    finally:
        locked.chmod(0o700)


def test_unknown_output_extension(tmp_path, trp):
    run_bad(tmp_path, [trp["traj"], "--top", trp["top"]], ["aa.foo", "unknown output extension"], out_name="aa.foo")


def test_hydrogens_without_relax(tmp_path, trp):
    run_bad(tmp_path, [trp["top"], "--hydrogens"], ["--hydrogens", "--relax"], out_name="aa.pdb")


@pytest.mark.parametrize("option,value", [("--samples", "0"), ("--batch-size", "0"), ("--start", "100"),
                                          ("--relief-steps", "-1")])
def test_bad_numbers(tmp_path, trp, option, value):
    run_bad(tmp_path, [trp["traj"], "--top", trp["top"], option, value], [option.lstrip("-").split("-")[0]])


def test_gro_output_of_a_trajectory(tmp_path, trp):
    run_bad(tmp_path, [trp["traj"], "--top", trp["top"], "--batch-size", "4"], ["aa.gro"], out_name="aa.gro")


@pytest.mark.parametrize("case", ["nan", "truncated"])
def test_failure_in_a_later_batch_leaves_nothing(tmp_path, trp, case):
    if case == "nan":
        top, traj = write_cg(trp["u"], tmp_path, traj_ext="dcd", edit=_edit_frame(np.nan))
    else:
        top, traj = trp["top"], tmp_path / "cut.xtc"
        traj.write_bytes(open(trp["traj"], "rb").read()[:-20])
    run_bad(tmp_path, [str(traj), "--top", str(top), "--batch-size", "4"], [str(traj)])


def test_frame_error_without_quiet_is_one_line(tmp_path, trp):
    top, traj = write_cg(trp["u"], tmp_path, traj_ext="dcd", edit=_edit_frame(np.nan))
    run_bad(tmp_path, [str(traj), "--top", str(top), "--batch-size", "4"], ["frame 20"], out_name="aa.pdb",
            quiet=False)


def test_debug_shows_traceback(tmp_path, trp):
    missing = tmp_path / "nothere.pdb"
    result = CliRunner().invoke(main, [str(missing), "-o", str(tmp_path / "aa.pdb"), "--debug"])
    assert result.exit_code == 2
    assert "Traceback" in result.stderr and "LatcpbInputError" in result.stderr
    assert result.stderr.strip().splitlines()[-1].startswith(PROG)


def test_real_process_stderr(tmp_path, trp):
    """The installed console script, as a user runs it (no --quiet): exit 2, one line, nothing written."""
    exe = backmap_command()
    garbage = tmp_path / "garbage.gro"
    garbage.write_bytes(bytes(range(256)) * 8)
    out = tmp_path / "out"
    out.mkdir()
    cases = {
        "missing": ([str(tmp_path / "nothere.xtc"), "--top", trp["top"]], "nothere.xtc"),
        "garbage": ([str(garbage)], "garbage.gro"),
        "select": ([trp["traj"], "--top", trp["top"], "--select", "name BB"], "name BB"),
    }
    procs = {k: subprocess.Popen([*exe, *args, "-o", str(out / f"{k}.xtc"), "--model", "geometric"],
                                 stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
             for k, (args, _) in cases.items()}
    for key, proc in procs.items():
        stdout, stderr = proc.communicate(timeout=300)
        assert proc.returncode == 2, (key, stderr)
        lines = visible_lines(stderr)
        assert len(lines) == 1 and lines[0].startswith(PROG) and cases[key][1] in lines[0], (key, stderr)
        assert "Traceback" not in stderr
    assert os.listdir(out) == []


# ------------------------------------------------------------------ interrupting a long job (Ctrl-C, kill)


@pytest.fixture(scope="module")
def long_job(tmp_path_factory, val_dir):
    """A 3400-frame CA trajectory of T0862 (93 residues): minutes of work for latcpb-backmap."""
    import MDAnalysis as mda

    d = tmp_path_factory.mktemp("long")
    u = quiet_universe(val_dir / "T0862.pdb")
    ca = u.select_atoms("name CA")
    cg = mda.Merge(ca)
    cg.atoms.write(str(d / "cg.pdb"))
    rng = np.random.default_rng(0)
    with mda.Writer(str(d / "cg.xtc"), n_atoms=len(ca)) as w:
        for _ in range(3400):
            cg.atoms.positions = ca.positions + rng.normal(scale=0.1, size=ca.positions.shape)
            w.write(cg.atoms)
    return d


def _interrupt(long_job, out_dir, signum):
    """Start latcpb-backmap, wait until it is writing frames, send ``signum``; (exit code, stderr)."""
    import signal
    import time

    out_dir.mkdir()
    proc = subprocess.Popen(
        [*backmap_command(), str(long_job / "cg.xtc"), "--top", str(long_job / "cg.pdb"),
         "-o", str(out_dir / "aa.xtc"), "--model", "geometric"],
        stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
        preexec_fn=lambda: signal.signal(signal.SIGINT, signal.SIG_DFL))  # a background shell may ignore SIGINT
    deadline = time.monotonic() + 180
    while not any(".partial" in f for f in os.listdir(out_dir)):
        assert proc.poll() is None, proc.communicate()
        assert time.monotonic() < deadline, "no frames written within 180 s"
        time.sleep(0.1)
    time.sleep(0.5)
    assert proc.poll() is None, "the job finished before it could be interrupted"
    proc.send_signal(signum)
    _, stderr = proc.communicate(timeout=120)
    return proc.returncode, stderr


def test_ctrl_c_leaves_no_partial_output(tmp_path, long_job):
    import signal

    out = tmp_path / "out"
    code, stderr = _interrupt(long_job, out, signal.SIGINT)
    assert code == 130
    assert visible_lines(stderr)[-1] == "latcpb-backmap: interrupted; no output written"
    assert "Traceback" not in stderr
    left = sorted(os.listdir(out))
    assert not [f for f in left if ".partial" in f or f.endswith(".xtc")], left
    assert left == ["aa.xtc.latcpb-work"], left  # only the complete blocks, kept for --resume


def test_sigterm_leaves_no_partial_output(tmp_path, long_job):
    import signal

    out = tmp_path / "out"
    code, _ = _interrupt(long_job, out, signal.SIGTERM)
    assert code != 0
    assert not [f for f in os.listdir(out) if ".partial" in f]


@pytest.mark.parametrize("start,step,batch", [(2, 3, 2), (5, 5, 1), (0, 4, 3)])
def test_bad_frame_named_by_its_input_number_under_start_step(tmp_path, trp, start, step, batch):
    """Frame 20 of the input holds a NaN: with --start/--step (and batches) the error still names frame 20."""
    top, traj = write_cg(trp["u"], tmp_path, traj_ext="dcd", edit=_edit_frame(np.nan))
    assert 20 in range(start, 28, step)
    line = run_bad(tmp_path, [str(traj), "--top", str(top), "--start", str(start), "--step", str(step),
                              "--batch-size", str(batch)], [str(traj), "frame 20"])
    assert re.search(r"\bframe 20\b", line), line
