"""latcpb.metrics on a real structure (Trp-cage 2JOF, tests/data/val): identity gives perfect scores, known
perturbations move each metric the right way."""
from __future__ import annotations

import time
import warnings
from pathlib import Path

import MDAnalysis as mda
import numpy as np
import pytest
from MDAnalysis.coordinates.memory import MemoryReader

from latcpb.errors import LatcpbInputError
from latcpb.metrics import evaluate, match_systems
from latcpb.metrics import structure as st
from latcpb.metrics import torsions as tor

DATA = Path(__file__).parent / "data" / "val"
RMSD_KEYS = [f"rmsd_{s}{sup}{t}" for s in ("heavy", "backbone", "sidechain") for sup in ("", "_superposed")
             for t in ("", "_with_termini")]


def _universe(traj=False):
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        if traj:
            return mda.Universe(str(DATA / "2JOF.pdb"), str(DATA / "2JOF.xtc"))
        return mda.Universe(str(DATA / "2JOF.pdb"))


@pytest.fixture(scope="module")
def ref():
    return _universe()


def _copy(u, positions):
    """In-memory copy of u's topology with coordinates [A, 3] or [F, A, 3] Å."""
    v = mda.Merge(u.atoms)
    pos = np.asarray(positions, dtype=np.float32)
    v.load_new(pos[None] if pos.ndim == 2 else pos, format=MemoryReader)
    return v


def _side_chain_beyond_cb(u):
    return u.select_atoms("not name N CA C O OXT CB")


def _rotate(points, origin, axis, angle):
    """Rodrigues rotation of points [K, 3] about an axis through origin."""
    k = axis / np.linalg.norm(axis)
    p = points - origin
    cos, sin = np.cos(angle), np.sin(angle)
    return origin + p * cos + np.cross(k, p) * sin + np.outer(p @ k, k) * (1 - cos)


def test_identity_gives_perfect_scores(ref):
    r = evaluate(ref, _copy(ref, ref.atoms.positions))
    assert r["coverage"] == 1.0 and r["n_residues"] == 20 and r["n_matched_atoms"] == 148
    for key in RMSD_KEYS + ["ca_rmsd", "ged_signed", "ged_corrected", "clash_residue_pct", "clash_pair_pct",
                            "bond_rmsd", "torsion_kl", "kl_phi", "kl_psi", "kl_chi1", "kl_chi2"]:
        assert r[key] == pytest.approx(0.0, abs=1e-5), key
    assert r["bond_score"] == 1.0
    assert r["d_residues"] == 0 and r["cis_peptides"] == 0
    assert r["diversity"] is None
    assert all(v == pytest.approx(0.0, abs=1e-6) for v in r["per_residue"]["rmsd"])
    assert r["per_residue"]["resids"] == list(range(1, 21))
    assert r["per_residue"]["terminal"][0] and r["per_residue"]["terminal"][-1]
    assert sum(r["per_residue"]["terminal"]) == 2


def test_side_chain_displacement_moves_side_chain_rmsd_only(ref):
    pos = ref.atoms.positions.copy()
    sc = _side_chain_beyond_cb(ref).indices
    pos[sc] += np.array([0.5, 0.0, 0.0], dtype=np.float32)
    r = evaluate(ref, _copy(ref, pos))
    assert r["rmsd_sidechain_with_termini"] == pytest.approx(0.5, abs=1e-4)
    assert r["rmsd_sidechain"] == pytest.approx(0.5, abs=1e-4)
    assert r["rmsd_backbone"] == pytest.approx(0.0, abs=1e-6)
    assert r["rmsd_backbone_with_termini"] == pytest.approx(0.0, abs=1e-6)
    n_sc, n_heavy = len(sc), len(ref.atoms)
    assert r["rmsd_heavy_with_termini"] == pytest.approx(0.5 * np.sqrt(n_sc / n_heavy), abs=1e-4)
    # a pure translation of the side-chain set is removed by superposition of that set
    assert r["rmsd_sidechain_superposed_with_termini"] == pytest.approx(0.0, abs=1e-3)
    assert r["ca_rmsd"] == pytest.approx(0.0, abs=1e-6)
    assert 0.0 < r["bond_score"] < 1.0          # CB-CG bonds stretched or compressed
    assert r["bond_rmsd"] > 0.05


def test_rotated_copy_superposed_rmsd_zero_unsuperposed_large(ref):
    pos = ref.atoms.positions.astype(np.float64)
    centre = pos.mean(0)
    rotated = _rotate(pos, centre, np.array([1.0, 2.0, 0.5]), np.deg2rad(100)) + np.array([3.0, -2.0, 1.0])
    r = evaluate(ref, _copy(ref, rotated))
    for s in ("heavy", "backbone", "sidechain"):
        assert r[f"rmsd_{s}_superposed"] < 1e-3
        assert r[f"rmsd_{s}_superposed_with_termini"] < 1e-3
        assert r[f"rmsd_{s}"] > 5.0
    assert r["ca_rmsd"] > 5.0
    # internal geometry is unchanged
    assert r["bond_score"] == 1.0 and r["ged_corrected"] == 0.0 and r["torsion_kl"] == pytest.approx(0, abs=1e-9)


def test_terminal_residues_excluded_or_included(ref):
    pos = ref.atoms.positions.copy()
    first = ref.residues[0].atoms.indices
    pos[first] += np.array([0.0, 0.0, 2.0], dtype=np.float32)
    r = evaluate(ref, _copy(ref, pos))
    assert r["rmsd_heavy"] == pytest.approx(0.0, abs=1e-6)
    assert r["rmsd_heavy_with_termini"] == pytest.approx(2.0 * np.sqrt(len(first) / len(ref.atoms)), abs=1e-4)
    assert r["per_residue"]["rmsd"][0] == pytest.approx(2.0, abs=1e-4)


def test_compressed_atom_pair_is_a_clash(ref):
    pos = ref.atoms.positions.copy()
    a = ref.select_atoms("resid 6 and name CZ2")[0]   # Trp6 ring
    b = ref.select_atoms("resid 12 and name CD")[0]   # Pro12 (non-adjacent)
    pos[a.index] = pos[b.index] + np.array([0.6, 0.0, 0.0], dtype=np.float32)
    r = evaluate(ref, _copy(ref, pos))
    assert r["clash_residue_pct"] == pytest.approx(100.0 * 2 / 20)
    assert r["clash_pair_pct"] > 0.0
    # a pair inside one residue counts among clashing pairs but not clashing residues
    pos2 = ref.atoms.positions.copy()
    c = ref.select_atoms("resid 6 and name CH2")[0]
    cb = ref.select_atoms("resid 6 and name CB")[0]     # not bonded to CH2
    pos2[c.index] = pos2[cb.index] + np.array([0.0, 0.5, 0.0], dtype=np.float32)
    r2 = evaluate(ref, _copy(ref, pos2))
    assert r2["clash_residue_pct"] == 0.0 and r2["clash_pair_pct"] > 0.0


def test_mirror_image_is_all_d(ref):
    pos = ref.atoms.positions.copy()
    pos[:, 0] *= -1
    r = evaluate(ref, _copy(ref, pos))
    n_chiral = sum(1 for res in ref.residues if res.resname != "GLY")
    assert r["d_residues"] == n_chiral
    assert r["d_residue_pct"] == pytest.approx(100.0)
    assert r["d_residues_ref"] == 0
    assert r["rmsd_heavy_superposed"] > 0.5      # a mirror image cannot be superposed by a rotation
    assert r["bond_score"] == 1.0                 # lengths preserved


def test_chi_rotation_raises_kl_and_side_chain_rmsd(ref):
    pos = ref.atoms.positions.astype(np.float64)
    for res in ref.residues:
        names = set(res.atoms.names)
        if res.resname == "PRO" or "CB" not in names or "CG" not in names and "OG" not in names and "OG1" not in names and "SG" not in names:
            continue
        ca, cb = res.atoms.select_atoms("name CA")[0].index, res.atoms.select_atoms("name CB")[0].index
        moving = res.atoms.select_atoms("not name N CA C O OXT CB").indices
        pos[moving] = _rotate(pos[moving], pos[cb], pos[cb] - pos[ca], np.deg2rad(120))
    r = evaluate(ref, _copy(ref, pos))
    assert r["kl_chi1"] > 1.0
    assert r["kl_phi"] == pytest.approx(0.0, abs=1e-9) and r["kl_psi"] == pytest.approx(0.0, abs=1e-9)
    assert r["torsion_kl"] > 0.25
    assert r["rmsd_sidechain"] > 1.0 and r["rmsd_backbone"] == pytest.approx(0.0, abs=1e-6)
    assert r["bond_score"] == 1.0                 # rotation about CA-CB keeps every bond length
    # the histograms behind the KL (to pool over systems): as many chi1 counted, their KL the reported one
    ref_c, gen_c = (np.array(r["torsion_counts"]["chi1"][side]) for side in ("reference", "generated"))
    assert ref_c.sum() == gen_c.sum() >= 10 and not np.array_equal(ref_c, gen_c)
    assert tor.kl_divergence(ref_c, gen_c) == pytest.approx(r["kl_chi1"])


def test_omega_flip_gives_cis_peptide(ref):
    pos = ref.atoms.positions.astype(np.float64)
    i = 4                                          # peptide bond GLN5 C - TRP6 N (TRP6 is not a proline)
    c = ref.select_atoms(f"resid {i} and name C")[0].index
    n = ref.select_atoms(f"resid {i + 1} and name N")[0].index
    downstream = ref.select_atoms(f"resid {i + 1}:20").indices
    pos[downstream] = _rotate(pos[downstream], pos[c], pos[n] - pos[c], np.pi)
    r = evaluate(ref, _copy(ref, pos))
    assert r["cis_peptides"] == 1 and r["cis_peptides_ref"] == 0
    assert r["d_residues"] == 0


def test_scaled_structure_breaks_bonds(ref):
    pos = ref.atoms.positions.astype(np.float64)
    centre = pos.mean(0)
    r = evaluate(ref, _copy(ref, centre + 1.6 * (pos - centre)))
    assert r["bond_score"] == 0.0
    assert r["ged_signed"] == pytest.approx(1.0) and r["ged_corrected"] == pytest.approx(1.0)
    assert r["bond_rmsd"] > 0.5
    r = evaluate(ref, _copy(ref, centre + 1.05 * (pos - centre)))
    assert r["bond_score"] == 1.0 and 0.05 < r["bond_rmsd"] < 0.1


def test_missing_atoms_lower_coverage_and_matching_normalises_names(ref):
    gen = mda.Merge(ref.select_atoms("not name CZ"))
    r = evaluate(ref, gen)
    n_cz = len(ref.select_atoms("name CZ"))
    assert n_cz > 0 and r["coverage"] == pytest.approx((148 - n_cz) / 148)
    assert r["rmsd_heavy"] == 0.0
    # CHARMM-style terminal oxygens OT1/OT2 and reordered atoms still match O/OXT
    gen = mda.Merge(ref.atoms[::-1])
    last = gen.residues[-1] if gen.residues[-1].resid == 20 else gen.residues[0]
    for atom in last.atoms:
        if atom.name == "O":
            atom.name = "OT1"
        elif atom.name == "OXT":
            atom.name = "OT2"
    r = evaluate(ref, gen)
    assert r["coverage"] == 1.0 and r["rmsd_heavy_with_termini"] == 0.0


def test_diversity_formula(ref):
    rng = np.random.default_rng(0)
    pos = ref.atoms.positions.astype(np.float64)
    s1, s2 = pos + rng.normal(0, 0.3, pos.shape), pos + rng.normal(0, 0.3, pos.shape)
    r = evaluate(ref, _copy(ref, np.stack([s1, s2])), samples=2)
    gg = np.sqrt(((s1 - s2) ** 2).sum(-1).mean())
    gr = 0.5 * (np.sqrt(((s1 - pos) ** 2).sum(-1).mean()) + np.sqrt(((s2 - pos) ** 2).sum(-1).mean()))
    assert r["diversity"] == pytest.approx(1 - gg / gr, abs=1e-4)
    assert -0.6 < r["diversity"] < -0.2              # independent noise: gen-gen ~ sqrt(2) x gen-ref
    r = evaluate(ref, _copy(ref, np.stack([s1, s1])), samples=2)
    assert r["diversity"] == pytest.approx(1.0)      # identical samples
    assert r["n_generated_frames"] == 2 and r["n_reference_frames"] == 1


def test_ensemble_kl_is_order_independent_and_frames_pair_up():
    ref = _universe(traj=True)
    coords = np.stack([ts.positions.copy() for ts in ref.trajectory])
    assert len(coords) == 28
    r = evaluate(ref, _copy(ref, coords))
    assert r["n_reference_frames"] == 28 and r["rmsd_heavy"] == pytest.approx(0.0, abs=1e-5)
    r = evaluate(ref, _copy(ref, coords[::-1]))
    assert r["torsion_kl"] == pytest.approx(0.0, abs=1e-9)     # same pooled distribution
    assert r["rmsd_heavy_with_termini"] > 0.5                    # but frames pair with other frames
    # two samples per reference frame: frame-major pairing
    r = evaluate(ref, _copy(ref, np.repeat(coords, 2, axis=0)), samples=2)
    assert r["rmsd_heavy"] == pytest.approx(0.0, abs=1e-5) and r["n_generated_frames"] == 56
    with pytest.raises(LatcpbInputError, match="expected 28"):
        evaluate(ref, _copy(ref, coords[:10]))


def test_no_common_residue_is_an_input_error(ref):
    other = mda.Merge(ref.atoms)
    other.residues.resids = other.residues.resids + 100
    with pytest.raises(LatcpbInputError, match="no residue matches"):
        evaluate(ref, other)


def test_low_level_functions(ref):
    m = match_systems(ref.atoms, ref.atoms)
    xyz = m.slots(ref.atoms.positions, "ref")
    assert xyz.shape == (20, 15, 3)
    phi, psi, omega, phi_m, psi_m, omega_m = tor.backbone_torsions(xyz, m.mask, m.previous)
    assert not phi_m[0] and not psi_m[-1] and phi_m[1:].all() and psi_m[:-1].all()
    # trans peptides everywhere (|omega| > 150°) in the NMR structure
    assert (np.abs(np.rad2deg(omega[omega_m])) > 150).all()
    # MDAnalysis' dihedral agrees with ours
    from MDAnalysis.lib.distances import calc_dihedrals
    n, ca, c = xyz[1:, 0], xyz[1:, 1], xyz[1:, 2]
    np.testing.assert_allclose(phi[1:], calc_dihedrals(xyz[:-1, 2], n, ca, c), atol=1e-6)
    chi, chi_m = tor.chi_angles(xyz, m.mask, m.restype)
    assert chi_m.sum() == sum(len(st_) for st_ in [__import__("latcpb.geometry.residue_constants", fromlist=["x"])
                                                     .CHI_ATOMS[r] for r in m.resnames])
    bonds = st.perceive_bonds(m.slots(ref.atoms.positions, "ref").reshape(-1, 3)[m.mask.ravel()],
                              st.atom_radii(m.elements.ravel()[m.mask.ravel()]))
    # a tree of 148 atoms in one chain has 147 bonds; each ring closes one more (no disulfide in 2JOF)
    n_rings = 2 + 1 + 4                               # Trp (2 rings), Tyr, 4 prolines
    assert len(bonds) == 147 + n_rings
    assert tor.kl_divergence([10, 0, 0], [10, 0, 0]) == pytest.approx(0.0)
    assert tor.kl_divergence([10, 0, 0], [0, 10, 0]) > 10
    assert tor.histogram(np.deg2rad([-180, 179.9, 0.0])).sum() == 3


def test_500_residue_frame_scores_in_well_under_a_second(ref):
    """25 copies of 2JOF on a grid as separate chains (500 residues, 3,700 heavy atoms)."""
    frames = []
    base = ref.atoms.positions.astype(np.float64)
    base = base - base.mean(0)
    offsets = np.array([(i, j, k) for i in range(3) for j in range(3) for k in range(3)][:25]) * 18.0
    big = mda.Merge(*[ref.atoms] * 25)
    big.add_TopologyAttr("chainIDs", np.repeat(list("ABCDEFGHIJKLMNOPQRSTUVWXY"), 148))
    for f in range(3):
        frames.append(np.concatenate([base + o + 0.1 * f for o in offsets]))
    gen = np.stack(frames) + np.random.default_rng(1).normal(0, 0.2, (3, 3700, 3))
    ref_u, gen_u = _copy(big, np.stack(frames)), _copy(big, gen)
    evaluate(ref_u, gen_u)                            # warm-up (imports, caches)
    t0 = time.perf_counter()
    r = evaluate(ref_u, gen_u)
    per_frame = (time.perf_counter() - t0) / 3
    assert r["n_residues"] == 500 and r["n_matched_atoms"] == 3700
    assert r["rmsd_heavy_with_termini"] == pytest.approx(0.2 * np.sqrt(3), rel=0.05)
    assert per_frame < 1.0, f"{per_frame:.2f} s per 500-residue frame"
