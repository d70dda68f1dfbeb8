"""latcpb-eval on real files (2JOF, tests/data/val): perfect self scores, figures, argument forms, bad input."""
from __future__ import annotations

import json
import shutil
from pathlib import Path

import MDAnalysis as mda
import numpy as np
import pytest
from click.testing import CliRunner

from latcpb.cli.evaluate import main, split_inputs
from latcpb.errors import LatcpbInputError

DATA = Path(__file__).parent / "data" / "val"
PDB, XTC = str(DATA / "2JOF.pdb"), str(DATA / "2JOF.xtc")
PNG_MAGIC = b"\x89PNG\r\n\x1a\n"


def _run(args):
    return CliRunner().invoke(main, args)


@pytest.fixture(scope="module")
def ensemble_report(tmp_path_factory):
    out = tmp_path_factory.mktemp("report")
    result = _run([PDB, XTC, PDB, XTC, "-o", str(out)])
    return result, out


def test_ensemble_against_itself_is_perfect(ensemble_report):
    result, out = ensemble_report
    assert result.exit_code == 0, result.output
    metrics = json.loads((out / "metrics.json").read_text())
    assert metrics["n_reference_frames"] == 28 and metrics["n_generated_frames"] == 28
    assert metrics["coverage"] == 1.0 and metrics["bond_score"] == 1.0
    for key in ("rmsd_heavy", "rmsd_heavy_with_termini", "rmsd_backbone", "rmsd_sidechain", "ged_signed",
                "ged_corrected", "clash_residue_pct", "clash_pair_pct", "torsion_kl", "ca_rmsd", "bond_rmsd"):
        assert metrics[key] == pytest.approx(0.0, abs=1e-5), key
    assert metrics["d_residues"] == 0 and metrics["cis_peptides"] == 0
    assert len(metrics["per_residue"]["rmsd"]) == 20
    assert metrics["inputs"]["reference_trajectory"] == XTC
    assert "RMSD heavy 0.000" in result.output


def test_ensemble_report_writes_pngs(ensemble_report):
    _, out = ensemble_report
    from matplotlib.image import imread

    for name in ("torsions.png", "ramachandran.png", "per_residue_rmsd.png"):
        path = out / name
        assert path.read_bytes()[:8] == PNG_MAGIC
        img = imread(str(path))
        assert img.shape[0] > 200 and img.shape[1] > 400
        assert img[..., :3].std() > 0.05        # not a blank canvas
    assert json.loads((out / "metrics.json").read_text())["figures"] == [
        "torsions.png", "ramachandran.png", "per_residue_rmsd.png"]


def test_two_and_three_argument_forms(tmp_path):
    # 2 args: one structure vs a perturbed copy of itself
    u = mda.Universe(PDB)
    rng = np.random.default_rng(0)
    u.atoms.positions = u.atoms.positions + rng.normal(0, 0.3, (len(u.atoms), 3)).astype(np.float32)
    noisy = tmp_path / "noisy.pdb"
    u.atoms.write(str(noisy))
    r = _run([PDB, str(noisy), "-o", str(tmp_path / "a"), "--no-plots"])
    assert r.exit_code == 0, r.output
    m = json.loads((tmp_path / "a" / "metrics.json").read_text())
    assert 0.3 < m["rmsd_heavy_with_termini"] < 0.7 and m["figures"] == []
    # 3 args, second a trajectory: ref top + ref traj, gen top (1 frame) -> frame count mismatch (28 vs 1)
    r = _run([PDB, XTC, PDB, "-o", str(tmp_path / "b")])
    assert r.exit_code == 2 and "expected 28" in r.stderr
    # 3 args, second a topology: ref top, gen top + gen traj, 28 samples of one reference frame
    r = _run([PDB, PDB, XTC, "-o", str(tmp_path / "c"), "--samples", "28", "--no-plots"])
    assert r.exit_code == 0, r.output
    m = json.loads((tmp_path / "c" / "metrics.json").read_text())
    assert m["samples"] == 28 and m["diversity"] is not None and m["rmsd_heavy"] > 0.5
    assert split_inputs(["a.pdb", "b.dcd", "c.gro"]) == (("a.pdb", "b.dcd"), ("c.gro", None))
    assert split_inputs(["a.pdb", "c.gro", "c.xtc"]) == (("a.pdb", None), ("c.gro", "c.xtc"))
    with pytest.raises(LatcpbInputError):
        split_inputs(["a.pdb", "b.gro", "c.pdb"])


@pytest.mark.parametrize("case", ["missing", "garbage", "count", "bad_traj", "unmatched"])
def test_bad_input_exits_2_with_one_line_naming_the_file(tmp_path, case, capfd):
    garbage = tmp_path / "garbage.pdb"
    garbage.write_text("this is not a structure\n")
    bad_traj = tmp_path / "broken.xtc"
    bad_traj.write_bytes(b"\x00\x01not an xtc" * 10)
    other = tmp_path / "shifted.pdb"
    u = mda.Universe(PDB)
    u.residues.resids = u.residues.resids + 500
    u.atoms.write(str(other))
    args, culprit = {
        "missing": ([PDB, str(tmp_path / "nope.pdb")], "nope.pdb"),
        "garbage": ([PDB, str(garbage)], "garbage.pdb"),
        "count": ([PDB, PDB, PDB, PDB, PDB], "5"),
        "bad_traj": ([PDB, PDB, str(bad_traj)], "broken.xtc"),
        "unmatched": ([PDB, str(other)], "shifted.pdb"),
    }[case]
    r = _run(args + ["-o", str(tmp_path / "out")])
    assert r.exit_code == 2, r.output
    lines = r.stderr.strip().splitlines()
    assert len(lines) == 1 and culprit in lines[0] and "Traceback" not in r.output
    import gc

    gc.collect()   # a half-built MDAnalysis reader must not print 'Exception ignored ...' later
    assert "Exception ignored" not in capfd.readouterr().err


def test_samples_must_be_positive(tmp_path):
    r = _run([PDB, PDB, "-o", str(tmp_path / "x"), "--samples", "0"])
    assert r.exit_code == 2


def test_report_dir_cannot_be_a_file(tmp_path):
    target = tmp_path / "file"
    target.write_text("x")
    shutil.copy(PDB, tmp_path / "ref.pdb")
    r = _run([str(tmp_path / "ref.pdb"), PDB, "-o", str(target / "sub")])
    assert r.exit_code == 2 and "sub" in r.stderr.strip().splitlines()[0]
