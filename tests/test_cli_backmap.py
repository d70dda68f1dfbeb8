"""``latcpb-backmap`` end to end on CA-only files made from the validation set: every reference heavy atom
rebuilt, Engh & Huber bonds, L chirality, input CA kept, numbering/chains kept, frame selection, samples, bead
selection, force-field residue names, several chains, chain gaps and input/output formats."""
from __future__ import annotations

import subprocess

import MDAnalysis as mda
import numpy as np
import pytest
from click.testing import CliRunner

import latcpb
from conftest import backmap_command, quiet_universe, write_cg
from latcpb.cli.backmap import main
from test_backmapper import HEAVY_ATOMS, bond_deviations, chirality, heavy_keys


def backmap(args, model=None):
    """``latcpb-backmap ARGS --quiet`` in-process, with the default (shipped) model unless ``model`` is given."""
    result = CliRunner().invoke(main, [*map(str, args), *(["--model", model] if model else []), "--quiet"])
    assert result.exit_code == 0, (result.stderr, result.exception)
    return result


def check_output(aa, ref, ref_frames, max_checked=6):
    """Output frame k comes from reference frame ref_frames[k]: frame count, then coverage 1.0 of the reference
    heavy atoms, bonds, chirality and CA on up to ``max_checked`` frames spread over the output."""
    ref_frames = list(ref_frames)
    assert len(aa.trajectory) == len(ref_frames)
    checked = sorted(set(np.linspace(0, len(ref_frames) - 1, min(max_checked, len(ref_frames))).astype(int)))
    for k in checked:
        f = ref_frames[k]
        ref.trajectory[f]
        aa.trajectory[k]
        missing = {k[1:] for k in heavy_keys(ref.atoms)} - {k[1:] for k in heavy_keys(aa.atoms)}  # a gap: own chain
        assert not missing, sorted(missing)[:5]
        intra, peptide = bond_deviations(aa)
        assert np.sqrt(np.mean(np.concatenate([intra, peptide]) ** 2)) < 0.02
        assert (chirality(aa) == 1).all()
        ca_ref = ref.select_atoms("name CA").positions
        assert np.abs(aa.select_atoms("name CA").positions - ca_ref).max() < 0.01
    assert list(aa.residues.resids) == list(ref.select_atoms("name CA").resids)


@pytest.fixture(scope="module")
def trp(tmp_path_factory, val_dir):
    d = tmp_path_factory.mktemp("trp")
    u = quiet_universe(val_dir / "2JOF.pdb", val_dir / "2JOF.xtc")
    top, traj = write_cg(u, d)
    return {"dir": d, "u": u, "top": top, "traj": traj}


def test_console_script_xtc(tmp_path, trp):
    """The installed command as a user runs it: aa.xtc + aa.pdb beside it, all frames."""
    out = tmp_path / "aa.xtc"
    proc = subprocess.run([*backmap_command(), str(trp["traj"]), "--top", str(trp["top"]),
                           "-o", str(out)], capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, proc.stderr
    assert "wrote 28 frames" in proc.stderr
    assert sorted(p.name for p in tmp_path.iterdir() if not p.name.startswith(".")) == ["aa.pdb", "aa.xtc"]
    aa = quiet_universe(tmp_path / "aa.pdb", out)
    check_output(aa, trp["u"], range(28))
    assert set(aa.atoms.chainIDs) == {"A"}


@pytest.mark.parametrize("name", ["PED00151val", "CLN025", "T0922", "T0862"])
def test_val_entries_cli(tmp_path, val_dir, name):
    ref = quiet_universe(*(p for p in (val_dir / f"{name}.pdb", val_dir / f"{name}.xtc") if p.exists()))
    if len(ref.trajectory) > 1:
        top, traj = write_cg(ref, tmp_path)
        backmap([traj, "--top", top, "-o", tmp_path / "aa.xtc"])
        aa = quiet_universe(tmp_path / "aa.pdb", tmp_path / "aa.xtc")
        check_output(aa, ref, range(len(ref.trajectory)))
    else:
        top, _ = write_cg(ref, tmp_path, traj_ext=None)
        backmap([top, "-o", tmp_path / "aa.pdb"])
        aa = quiet_universe(tmp_path / "aa.pdb")
        check_output(aa, ref, [0])
    ref_ca = ref.select_atoms("name CA")
    gaps = np.flatnonzero(np.diff(ref_ca.resids) != 1)  # every piece after a numbering gap gets a chain of its own
    assert len(set(aa.select_atoms("name CA").chainIDs)) == len(set(ref_ca.chainIDs)) + len(gaps)
    first = slice(0, gaps[0] + 1 if len(gaps) else None)
    assert list(aa.select_atoms("name CA").chainIDs[first]) == list(ref_ca.chainIDs[first])


@pytest.mark.parametrize("fmt", ["dcd", "trr", "pdb"])
def test_input_trajectory_formats(tmp_path, trp, fmt):
    top, traj = write_cg(trp["u"], tmp_path, traj_ext=fmt)
    args = [traj] if fmt == "pdb" else [traj, "--top", top]  # a multi-model PDB is a trajectory by itself
    backmap([*args, "-o", tmp_path / "aa.xtc"])
    aa = quiet_universe(tmp_path / "aa.pdb", tmp_path / "aa.xtc")
    check_output(aa, trp["u"], range(28))


@pytest.mark.parametrize("ext", ["dcd", "pdb", "trr"])
def test_output_formats(tmp_path, trp, ext):
    out = tmp_path / f"aa.{ext}"
    backmap([trp["traj"], "--top", trp["top"], "-o", out, "--stop", "5"])
    aa = quiet_universe(out) if ext == "pdb" else quiet_universe(tmp_path / "aa.pdb", out)
    check_output(aa, trp["u"], range(5))


def test_start_stop_step(tmp_path, trp):
    backmap([trp["traj"], "--top", trp["top"], "-o", tmp_path / "aa.xtc", "--start", "2", "--stop", "20",
             "--step", "3"])
    check_output(quiet_universe(tmp_path / "aa.pdb", tmp_path / "aa.xtc"), trp["u"], range(2, 20, 3))


def test_samples_double_frames(tmp_path, trp):
    backmap([trp["traj"], "--top", trp["top"], "-o", tmp_path / "aa.xtc", "--samples", "2", "--stop", "4"])
    aa = quiet_universe(tmp_path / "aa.pdb", tmp_path / "aa.xtc")
    check_output(aa, trp["u"], [0, 0, 1, 1, 2, 2, 3, 3])


def test_select_other_bead_name(tmp_path, trp):
    def rename(cg):
        cg.atoms.names = ["BB"] * len(cg.atoms)
    top, traj = write_cg(trp["u"], tmp_path, edit=rename)
    backmap([traj, "--top", top, "-o", tmp_path / "aa.xtc", "--select", "name BB", "--beads-as-ca"])
    check_output(quiet_universe(tmp_path / "aa.pdb", tmp_path / "aa.xtc"), trp["u"], range(28))


def test_force_field_residue_names(tmp_path, trp):
    """CHARMM/Amber/GROMACS spellings (NASP/CSER termini, HSD, CYX, HIE, LYSH) are read as standard residues."""
    renames = {0: "N{}", 19: "C{}", 4: "HSD", 7: "CYX", 10: "HIE", 12: "LYSH"}
    expected = list(trp["u"].residues.resnames)
    for i, new in renames.items():
        expected[i] = new if "{" not in new else expected[i]  # variant names kept; N/C terminal prefixes dropped

    def edit(cg):
        names = list(cg.residues.resnames)
        for i, new in renames.items():
            names[i] = new.format(names[i])
        cg.residues.resnames = names
    top, traj = write_cg(trp["u"], tmp_path, edit=edit)
    assert "NASP" in open(top).read() and "HSD" in open(top).read()
    backmap([traj, "--top", top, "-o", tmp_path / "aa.xtc", "--stop", "2"])
    aa = quiet_universe(tmp_path / "aa.pdb", tmp_path / "aa.xtc")
    assert list(aa.residues.resnames) == expected
    assert len(aa.atoms) == sum(HEAVY_ATOMS[latcpb.data.names.normalize_resname(r)] for r in expected) + 1
    assert len(aa.select_atoms("resname HSD HIE and name NE2")) == 2 and len(aa.select_atoms("name SG")) == 1


def test_several_chains_and_a_gap(tmp_path, val_dir):
    """Chain A: T0922 with 5 residues cut out (a CA-CA gap > 4.2 Å); chain B: CLN025 moved away.
    Both parts of A are rebuilt, the part after the gap as a chain of its own (own chain ID, OXT at every end)."""
    t0922 = quiet_universe(val_dir / "T0922.pdb")
    cln = quiet_universe(val_dir / "CLN025.pdb")
    ca_a = t0922.select_atoms("name CA")
    keep = np.r_[0:30, 35:len(ca_a)]
    ca_a = ca_a[keep]
    ca_b = cln.select_atoms("name CA")
    cg = mda.Merge(ca_a, ca_b)
    cg.atoms[len(ca_a):].positions += 80.0
    cg.add_TopologyAttr("chainIDs", ["A"] * len(ca_a) + ["B"] * len(ca_b))
    gap = np.linalg.norm(cg.atoms[30].position - cg.atoms[29].position)
    assert gap > 4.2
    top = tmp_path / "cg.pdb"
    cg.atoms.write(str(top))
    backmap([top, "-o", tmp_path / "aa.pdb"])
    aa = quiet_universe(tmp_path / "aa.pdb")
    ca_out = aa.select_atoms("name CA")
    assert list(ca_out.resids) == list(cg.atoms.resids)
    piece = ca_out.chainIDs[30]
    assert piece not in ("A", "B")
    assert list(ca_out.chainIDs) == ["A"] * 30 + [piece] * (len(ca_a) - 30) + ["B"] * len(ca_b)
    oxt = aa.select_atoms("name OXT")
    assert [(a.chainID, a.resid) for a in oxt] == [("A", ca_a.resids[29]), (piece, ca_a.resids[-1]),
                                                   ("B", ca_b.resids[-1])]
    expected = sum(HEAVY_ATOMS[r] for r in cg.atoms.resnames) + 3
    assert len(aa.atoms) == expected
    # the residues on both sides of the gap are complete and their backbone bonds ideal
    for chain, resid in (("A", ca_a.resids[29]), (piece, ca_a.resids[30])):
        res = aa.select_atoms(f"chainID {chain} and resid {resid}")
        assert set(res.names) >= {"N", "CA", "C", "O"}
    assert np.abs(aa.select_atoms("name CA").positions - cg.atoms.positions).max() < 0.01
    intra, peptide = bond_deviations(aa)
    assert np.abs(intra).max() < 0.02 and np.sqrt(np.mean(peptide ** 2)) < 0.05
    assert (chirality(aa) == 1).all()
    # no peptide bond drawn across the gap: C(29)-N(30) is far apart
    c29 = aa.select_atoms(f"chainID A and resid {ca_a.resids[29]} and name C").positions[0]
    n30 = aa.select_atoms(f"chainID {piece} and resid {ca_a.resids[30]} and name N").positions[0]
    assert np.linalg.norm(c29 - n30) > 2.0


def test_backmap_universe_api(trp):
    """Default model (shipped weights if present, geometric otherwise)."""
    cg = quiet_universe(trp["top"], trp["traj"])
    aa = latcpb.backmap_universe(cg, stop=3, seed=0)
    assert len(aa.trajectory) == 3
    assert len(aa.atoms) == sum(HEAVY_ATOMS[r] for r in cg.residues.resnames) + 1
    assert np.isfinite(aa.trajectory.coordinate_array).all()


@pytest.mark.parametrize("n", [2, 3])
def test_short_chains(tmp_path, trp, n):
    """A two-residue chain has no third CA to orient it: still complete, ideal and L."""
    trp["u"].trajectory[0]
    cg = mda.Merge(trp["u"].select_atoms("name CA")[:n])
    cg.atoms.write(str(tmp_path / "cg.pdb"))
    backmap([tmp_path / "cg.pdb", "-o", tmp_path / "aa.pdb"])
    aa = quiet_universe(tmp_path / "aa.pdb")
    assert len(aa.atoms) == sum(HEAVY_ATOMS[r] for r in cg.atoms.resnames) + 1
    intra, peptide = bond_deviations(aa)
    assert np.abs(intra).max() < 0.02 and np.abs(peptide).max() < 0.1
    assert (chirality(aa) == 1).all()


def test_insertion_codes_kept(tmp_path, trp):
    trp["u"].trajectory[0]
    cg = mda.Merge(trp["u"].select_atoms("name CA")[:6])
    cg.add_TopologyAttr("icodes", ["", "", "A", "B", "", ""])
    cg.residues.resids = [1, 2, 2, 2, 3, 4]
    cg.atoms.write(str(tmp_path / "cg.pdb"))
    backmap([tmp_path / "cg.pdb", "-o", tmp_path / "aa.pdb"])
    aa = quiet_universe(tmp_path / "aa.pdb")
    assert list(aa.residues.resids) == [1, 2, 2, 2, 3, 4]
    assert list(aa.residues.icodes) == ["", "", "A", "B", "", ""]
