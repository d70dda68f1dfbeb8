"""The OpenMM examples run end to end in their short mode (real backmapping, relaxation and MD)."""
import os
import subprocess
import sys

import pytest

pytest.importorskip("openmm")
EXAMPLES = os.path.join(os.path.dirname(__file__), "..", "examples")


def run(script, *args, cwd):
    proc = subprocess.run([sys.executable, os.path.join(EXAMPLES, script), *args], cwd=cwd, capture_output=True,
                          text=True, timeout=300)
    assert proc.returncode == 0, proc.stdout + proc.stderr
    return proc.stdout


def test_relax_and_simulate_short(tmp_path):
    out = run("relax_and_simulate.py", "--short", "--report", str(tmp_path / "r.json"), "--out",
              str(tmp_path / "relaxed.pdb"), cwd=tmp_path)
    assert "relax: ok" in out and "stable" in out and "UNSTABLE" not in out
    assert (tmp_path / "r.json").stat().st_size > 0 and (tmp_path / "relaxed.pdb").stat().st_size > 0


def test_cg_simulation_reporter_short(tmp_path):
    out = run("cg_simulation_reporter.py", "--short", "--out", str(tmp_path / "cg.xtc"), cwd=tmp_path)
    assert "wrote 4 all-atom frames of 148 atoms" in out  # Trp-cage: 20 residues, 147 heavy atoms + OXT
    assert "times 0.5-2 ps, last step 200, box [80.0, 80.0, 80.0, 90.0, 90.0, 90.0]" in out
    assert (tmp_path / "cg.pdb").exists()


def test_cg_simulation_reporter_openabc_hps_short(tmp_path):
    pytest.importorskip("openabc")
    out = run("cg_simulation_reporter.py", "--short", "--hps", "--out", str(tmp_path / "hps.xtc"), cwd=tmp_path)
    assert "wrote 4 all-atom frames of 148 atoms" in out
    assert "box [200.0, 200.0, 200.0, 90.0, 90.0, 90.0], 1 chain(s); frames not backmapped: 0" in out
