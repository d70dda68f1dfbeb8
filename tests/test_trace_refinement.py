"""The Backmapper refines CG-like CA traces before backmapping (latcpb.geometry.ca_trace), or keeps the beads exact
with keep_beads / --keep-beads; the move per frame is reported (FrameBatch.trace_move, one note per run)."""
import os

import numpy as np

import latcpb
from conftest import backmap_command, quiet_universe
from latcpb.backmapper import Backmapper
from latcpb.metrics.validity import structure_validity

CG = os.path.join(os.path.dirname(__file__), "data", "cg")


def soft_spacing():
    """PED00151val frames 0-5 with CA-CA bonds of 2.6-5.0 Å (tests/data/cg/make_fixtures.py)."""
    return quiet_universe(os.path.join(CG, "soft_spacing.pdb"), os.path.join(CG, "soft_spacing.xtc"))


def test_soft_cg_bonds_are_moved_to_valid_chemistry_and_reported():
    cg = soft_spacing()
    notes = []
    bm = Backmapper(model="geometric", note=notes.append)
    batches = list(bm.iter_backmap(cg))
    move = np.concatenate([b.trace_move for b in batches])
    assert len(move) == 6 and (move > 0).all() and np.concatenate([b.trace_valid for b in batches]).all()
    aa = batches[0].universe()
    ca_out = aa.select_atoms("name CA")
    spacing = np.linalg.norm(np.diff(ca_out.positions, axis=0), axis=1)
    before_pro = ca_out.resnames[1:] == "PRO"
    # TraceLimits: trans steps 3.68-3.92 Å; in a CG trace a short step is cis only before a proline (2.70-3.05 Å)
    trans = (spacing >= 3.68 - 1e-3) & (spacing <= 3.92 + 1e-3)
    cis = (spacing >= 2.70 - 1e-3) & (spacing <= 3.05 + 1e-3) & before_pro
    assert (trans | cis).all()
    # the move reported is the move made
    rms = np.sqrt(((ca_out.positions - cg.atoms.positions) ** 2).sum(-1).mean())
    assert abs(rms - move[0]) < 1e-3
    # valid chemistry: bond-angle outliers (Engh & Huber, 4 sigma) in under 1 % of residues (measured: one N-CA-C
    # at 4.4 sigma in 276 residues; 63 % of residues with --keep-beads below), no D residue
    figures = structure_validity(aa)
    assert np.mean([f["angle_outlier_residue_pct"] for f in figures]) < 1.0
    assert max(f["d_residue_pct"] for f in figures) == 0.0
    assert len(notes) == 1 and "CA trace moved in 6 of 6 frames" in notes[0] and "--keep-beads" in notes[0]


def test_keep_beads_keeps_them_exact_and_says_the_chemistry_is_invalid():
    cg = soft_spacing()
    notes = []
    aa = Backmapper(model="geometric", keep_beads=True, note=notes.append).backmap_universe(cg)
    for k, _ in enumerate(cg.trajectory):
        aa.trajectory[k]
        assert np.array_equal(aa.select_atoms("name CA").positions, cg.atoms.positions)
    assert len(notes) == 1 and "6 of 6 frames have a CA trace that no chain of ideal peptide units follows" in notes[0]
    outliers = [f["angle_outlier_residue_pct"] for f in structure_validity(aa)]
    assert min(outliers) > 5.0   # kept beads at 2.6-5.0 Å: invalid angles, as the note says


def test_atomistic_traces_are_kept_bit_for_bit_without_a_note(val_dir):
    ref = quiet_universe(val_dir / "CLN025.pdb")
    notes = []
    batch = next(Backmapper(model="geometric", note=notes.append).iter_backmap(ref.select_atoms("name CA")))
    assert notes == [] and batch.trace_move.tolist() == [0.0] and batch.trace_valid.all()
    assert np.array_equal(batch.universe().select_atoms("name CA").positions, ref.select_atoms("name CA").positions)


def test_cli_notes_the_move_and_keep_beads_round_trips(tmp_path):
    import subprocess

    top, traj = os.path.join(CG, "soft_spacing.pdb"), os.path.join(CG, "soft_spacing.xtc")
    runs = {}
    for name, extra in (("moved", []), ("kept", ["--keep-beads"])):
        (tmp_path / name).mkdir()
        out = tmp_path / name / "aa.xtc"
        proc = subprocess.run(backmap_command() + [traj, "--top", top, "-o", str(out), "--model", "geometric",
                                                   "--quiet"] + extra, capture_output=True, text=True)
        assert proc.returncode == 0, proc.stderr
        runs[name] = (quiet_universe(str(out.with_suffix(".pdb")), str(out)), proc.stderr)
    assert "CA trace moved in 6 of 6 frames" in runs["moved"][1]
    assert "6 of 6 frames have a CA trace that no chain" in runs["kept"][1]
    cg = soft_spacing()
    api = latcpb.backmap_universe(cg, model="geometric")
    for k, _ in enumerate(cg.trajectory):
        for name in runs:
            runs[name][0].trajectory[k]
        api.trajectory[k]
        assert np.array_equal(runs["kept"][0].select_atoms("name CA").positions, cg.atoms.positions)
        # CLI == API (XTC precision 0.01 Å)
        assert np.abs(runs["moved"][0].atoms.positions - api.atoms.positions).max() < 6e-3


def test_backbone_admission_moves_the_beads_where_a_proline_admits_no_ring():
    """T0947 around PRO 159 (a proline before a cis step; tests/data/cg/t0947_proline.pdb) refined to the CA limits,
    yet ideal peptide units on it admit no proline phi with N-CA-C in bound: the ring would close only with angles
    8 sigma off. ``admit_backbone`` moves the beads near it (nothing else, well under 0.5 Å) until the backbone is
    admitted; the default backmap then has no angle outlier, and with --keep-beads the outliers are back."""
    import torch

    from latcpb.geometry.backbone import inadmissible_excess
    from latcpb.geometry.ca_trace import admit_backbone, refine_ca_trace
    from latcpb.geometry.internal_coords import LayoutTensors

    u = quiet_universe(os.path.join(CG, "t0947_proline.pdb"))
    bm = Backmapper(seed=0)
    plan = bm.plan(u.atoms, source="t0947")
    lt = LayoutTensors(plan.topology.layout)
    ca = refine_ca_trace(torch.as_tensor(u.atoms.positions[None].astype(np.float64)), plan.topology.layout).ca
    pro = int(np.nonzero(u.residues.resnames == "PRO")[0][0])
    before = torch.rad2deg(inadmissible_excess(ca, lt))[0]
    assert before[pro] > 30 and int((before > 1).sum()) <= 2
    moved, admitted = admit_backbone(ca, lt)
    assert bool(admitted[0])
    assert float(torch.rad2deg(inadmissible_excess(moved, lt)).max()) <= 1.0
    shift = torch.linalg.norm(moved - ca, dim=-1)[0]
    assert float(shift.max()) < 0.5 and float(shift.square().mean().sqrt()) < 0.15
    far = (torch.arange(len(shift)) - pro).abs() > 4
    assert torch.equal(moved[0, far], ca[0, far])                      # beads away from it are kept exactly

    def angle_outliers(universe):
        return structure_validity(universe, "t0947")[0]["angle_outlier_residue_pct"]

    assert angle_outliers(latcpb.backmap_universe(u, seed=0)) == 0.0
    assert angle_outliers(latcpb.backmap_universe(u, seed=0, keep_beads=True)) > 0.0
