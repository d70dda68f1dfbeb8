"""Validity metrics (latcpb.metrics.validity, latcpb.metrics.wells): near zero on real structures, and each one
catches a deliberately broken structure (collapsed LEU, an O on the next N, a bent angle, a twisted ring, a D
residue, OXT on O, a side chain pushed into another residue, an eclipsed rotamer)."""
from __future__ import annotations

import warnings
from pathlib import Path

import MDAnalysis as mda
import numpy as np
import pytest

from latcpb.geometry import residue_constants as rc
from latcpb.metrics import evaluate
from latcpb.metrics import torsions as tor
from latcpb.metrics import validity as v
from latcpb.metrics import wells as wl

DATA = Path(__file__).parent / "data"
T0922 = DATA / "mini" / "T0922.pdb"


def _2jof() -> Path:
    for p in (DATA / "val" / "2JOF.pdb", DATA / "metrics" / "2JOF.pdb"):
        if p.exists():
            return p
    pytest.skip("2JOF fixture not found")


def _load(path):
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        u = mda.Universe(str(path))
    mapping, topo = v.structure_topology(u.atoms, str(path))
    return u, mapping, topo, mapping.slots(u.atoms.positions.astype(np.float64))


@pytest.fixture(scope="module")
def t0922():
    return _load(T0922)


def _slot(topo, r, atom):
    return rc.slot_names(rc.RESTYPES[topo.restype[r]]).index(atom)


def _first(topo, resname, interior=True):
    idx = np.flatnonzero(topo.restype == rc.RESTYPE_INDEX[resname])
    if interior:
        idx = idx[(idx > 0) & (idx < topo.n_residues - 1)]
    return int(idx[0])


def _rotate(points, origin, axis, angle):
    """Rotate points [K, 3] about the axis through origin by angle (rad), Rodrigues."""
    k = axis / np.linalg.norm(axis)
    p = points - origin
    return origin + p * np.cos(angle) + np.cross(k, p) * np.sin(angle) + np.outer(p @ k, k) * (1 - np.cos(angle))


def test_real_structures_score_near_zero(t0922):
    _, _, topo, xyz = t0922
    r = v.score_validity(topo, xyz)
    assert r["angle_outlier_residue_pct"] <= 2.0            # 1 of 74 residues (an MD-free model structure)
    assert r["overlap_per_1000_atoms"] <= 1.0
    assert r["rotamer_outlier_pct"] <= 2.0
    assert r["ramachandran_outlier_pct"] == 0.0
    assert r["cbeta_outlier_pct"] == 0.0 and r["cbeta_max_deviation"] < 0.25
    assert r["nonplanar_group_pct"] == 0.0
    assert r["d_residue_pct"] == 0.0 and r["cis_peptide_pct"] == 0.0
    _, _, topo2, xyz2 = _load(_2jof())
    assert topo2.present[-1, rc.OXT_SLOT]                    # the C-terminal carboxylate is scored too
    r2 = v.score_validity(topo2, xyz2)
    assert r2["angle_outlier_residue_pct"] <= 5.0            # one 4.4-sigma angle in 20 residues (an MD frame)
    assert r2["overlap_per_1000_atoms"] == 0.0 and r2["cbeta_outlier_pct"] == 0.0
    assert r2["rotamer_outlier_pct"] == 0.0 and r2["ramachandran_outlier_pct"] == 0.0
    assert r2["nonplanar_group_pct"] <= 4.0


@pytest.fixture(scope="module")
def trpcage():
    return _load(_2jof())


def test_topology_counts_chain_ends_and_matches_templates(trpcage):
    _, _, topo, _ = trpcage
    last = topo.n_residues - 1
    owners = set(topo.angle_residue.tolist())
    assert 0 in owners and last in owners                   # chain ends have their angles
    oxt = last * v.S + rc.OXT_SLOT
    assert topo.present[last, rc.OXT_SLOT] and (topo.angles[:, 1] == last * v.S + 2).any()
    assert (np.sort(topo.bonds, axis=1) == np.sort([last * v.S + 2, oxt])).all(-1).any()
    # template bonds implied by the Engh & Huber angles = the residue_constants build tree + ring closures
    for resname in rc.RESTYPES:
        tree = {tuple(sorted((a, rc.parents_of(resname, a)[2]))) for a in rc.RESIDUE_ATOMS[resname]
                if a not in ("N", "CA", "C")}
        tree |= {("CA", "N"), ("C", "CA")}
        tree |= {tuple(sorted((a, b))) for a, b, _ in rc.RING_CLOSING_BONDS.get(resname, [])}
        assert set(v.template_bonds(resname)) == tree, resname
    peptide = [(p * v.S + 2, r * v.S) for r, p in enumerate(topo.previous) if p >= 0]
    keys = set(map(tuple, topo.bonds.tolist()))
    assert all(tuple(sorted(b)) in keys for b in peptide)


def test_collapsed_leucine_is_an_angle_outlier(t0922):
    _, _, topo, xyz = t0922
    r = _first(topo, "LEU")
    bad = xyz.copy()
    cd1, cd2 = _slot(topo, r, "CD1"), _slot(topo, r, "CD2")
    bad[r, cd1] = bad[r, cd2] + np.array([0.03, 0.0, 0.0])
    out = v.angle_outliers(topo, bad)
    assert out["residues"][r] and out["max_z"] > 30           # CD1-CG-CD2 ~ 1° instead of 110.5 +- 3.0
    assert v.score_validity(topo, bad)["angle_outlier_residue_pct"] >= 100.0 / topo.n_residues


def test_oxygen_on_next_nitrogen_at_a_chain_start(t0922):
    _, _, topo, xyz = t0922
    bad = xyz.copy()
    n_next = bad[1, 0]
    bad[0, 3] = n_next + (bad[0, 3] - n_next) / np.linalg.norm(bad[0, 3] - n_next) * 0.86
    ang = v.angle_outliers(topo, bad)
    # O-C-N (1-3 pair, so an angle, not an overlap) collapsed at the first residue; also CA-C-O
    assert ang["residues"][0] and ang["max_z"] > 20
    assert not v.angle_outliers(topo, xyz)["residues"][0]
    assert v.score_validity(topo, bad)["angle_outlier_residue_pct"] > v.score_validity(topo, xyz)[
        "angle_outlier_residue_pct"]


def test_oxt_on_o_at_the_chain_end(trpcage):
    _, _, topo, xyz = trpcage
    last = topo.n_residues - 1
    bad = xyz.copy()
    bad[last, rc.OXT_SLOT] = bad[last, 3] + np.array([0.38, 0.0, 0.0])
    assert v.angle_outliers(topo, bad)["residues"][last]
    assert not v.angle_outliers(topo, xyz)["residues"][last]


def test_bent_angle(t0922):
    _, _, topo, xyz = t0922
    r = _first(topo, "THR")
    bad = xyz.copy()
    ca, cb = bad[r, 1], bad[r, 4]
    og1 = _slot(topo, r, "OG1")
    normal = np.cross(ca - cb, bad[r, og1] - cb)
    bad[r, og1] = _rotate(bad[r, og1][None], cb, normal, np.radians(12.0))[0]   # CA-CB-OG1 opened by 12°
    z = np.abs(v.bond_angles(bad.reshape(-1, 3), topo.angles) - topo.angle_ideal) / topo.angle_sigma
    assert v.angle_outliers(topo, bad)["residues"][r] and z.max() > 4.0
    assert not v.angle_outliers(topo, xyz)["residues"][r]
    dev = v.angle_deviation(topo, bad, xyz)
    assert 11.0 < dev["max"] < 13.0 and dev["mean"] > 0.0 and not dev["residues"].any()
    assert v.angle_deviation(topo, xyz, xyz)["max"] == 0.0


def test_twisted_ring_is_non_planar(t0922):
    _, _, topo, xyz = t0922
    kind = v.PLANAR_KINDS.index("ring")
    ring_residues = topo.group_residue[topo.group_kind == kind]
    r = int(ring_residues[0])
    resname = rc.RESTYPES[topo.restype[r]]
    members = v.PLANAR_GROUPS["ring"][resname]
    pts = xyz[r, [_slot(topo, r, a) for a in members]]
    normal = np.linalg.svd(pts - pts.mean(0))[2][-1]
    bad = xyz.copy()
    far = _slot(topo, r, members[-1])                         # CZ / OH / NE2 / CH2: out of the ring plane
    bad[r, far] += 0.6 * normal
    plan = v.planarity(topo, bad)
    group = np.flatnonzero((topo.group_kind == kind) & (topo.group_residue == r))[0]
    assert plan["nonplanar"][group] and plan["rms"][group] > v.PLANARITY_LIMIT["ring"]
    assert v.planarity(topo, xyz)["rms"][group] < 0.05


def test_peptide_twist_guanidinium_amide_carboxylate(t0922):
    _, _, topo, xyz = t0922
    _, _, omega, _, _, omega_m = tor.backbone_torsions(xyz, topo.present, topo.previous)
    flat_omega = np.where(omega_m, omega, np.pi)
    assert not v.planarity(topo, xyz, flat_omega)["nonplanar"].any()
    twisted = flat_omega.copy()
    twisted[5] = np.radians(120.0)                            # omega 60° from trans
    plan = v.planarity(topo, xyz, twisted)
    pep = np.flatnonzero((topo.group_kind == v.PLANAR_KINDS.index("peptide")) & (topo.group_residue == 5))[0]
    assert plan["nonplanar"][pep]
    for kind, resname, atom in (("guanidinium", "ARG", "NH1"), ("amide", "ASN", "ND2"),
                                ("carboxylate", "GLU", "OE1"), ("carboxylate", "ASP", "OD2")):
        if not (topo.restype == rc.RESTYPE_INDEX[resname]).any():
            continue
        r = _first(topo, resname, interior=False)
        members = v.PLANAR_GROUPS[kind][resname]
        pts = xyz[r, [_slot(topo, r, a) for a in members]]
        normal = np.linalg.svd(pts - pts.mean(0))[2][-1]
        bad = xyz.copy()
        bad[r, _slot(topo, r, atom)] += 0.8 * normal
        group = np.flatnonzero((topo.group_kind == v.PLANAR_KINDS.index(kind)) & (topo.group_residue == r))[0]
        assert v.planarity(topo, bad)["nonplanar"][group], resname


def test_d_residue_and_cbeta_deviation(t0922):
    _, _, topo, xyz = t0922
    r = _first(topo, "ALA")
    dev, defined = v.cbeta_deviation(xyz, topo.present, topo.restype)
    assert defined[r] and dev[defined].max() < v.CBETA_LIMIT
    bad = xyz.copy()
    n, ca, c = bad[r, 0], bad[r, 1], bad[r, 2]
    normal = np.cross(n - ca, c - ca)
    normal /= np.linalg.norm(normal)
    bad[r, 4] -= 2 * ((bad[r, 4] - ca) @ normal) * normal     # CB mirrored through the N-CA-C plane
    out = v.score_validity(topo, bad, details=True)
    assert out["details"]["d_residues"][r] and out["d_residue_pct"] > 0
    assert out["details"]["cbeta_deviation"][r] > 1.0 and out["cbeta_outlier_pct"] > 0
    first = bad.copy()                                        # the first residue of the chain counts too
    first[0, 4] = bad[0, 1] - (bad[0, 4] - bad[0, 1])
    assert v.score_validity(topo, first, details=True)["details"]["cbeta_deviation"][0] > 1.0


def test_overlap_rules_and_donor_acceptor_exception(t0922):
    _, _, topo, xyz = t0922
    ca = xyz[:, 1]
    i, j = 5, 40
    bad = xyz.copy()
    # a carbon of residue j put 2.5 Å from residue i's CA: vdW sum 3.4 Å -> overlap 0.9 Å
    direction = np.array([1.0, 0.0, 0.0])
    cb_j = 4 if topo.present[j, 4] else 1
    bad[j, cb_j] = ca[i] + 2.5 * direction
    ov = v.severe_overlaps(topo, bad)
    assert ov["residues"][i] and ov["residues"][j] and ov["overlap"].max() > 0.8
    # donor-acceptor pair (backbone O of i, backbone N of j): 2.6 Å is a hydrogen bond, 2.3 Å an overlap
    k, m = 10, 50
    for d, expected in ((2.6, False), (2.3, True)):
        trial = xyz.copy()
        trial[k, 3] = trial[m, 0] + d * direction
        pairs = v.severe_overlaps(topo, trial)["pairs"]
        hit = ((pairs == sorted((k * v.S + 3, m * v.S))).all(-1)).any()
        assert hit == expected, d


def test_rotamer_and_ramachandran_wells(t0922):
    _, _, topo, xyz = t0922
    wells = wl.load_wells()
    assert wl.DATA_PATH.stat().st_size < 1_000_000
    chi, chi_m = tor.chi_angles(xyz, topo.present, topo.restype)
    rot = wl.rotamers(chi, chi_m, topo.restype)
    assert rot["scored"].sum() > 40 and rot["outlier"].sum() <= 1
    # eclipsed chi1 (0°) of a LEU: its side chain turned about CA-CB
    r = _first(topo, "LEU")
    bad = xyz.copy()
    side = [_slot(topo, r, a) for a in ("CG", "CD1", "CD2")]
    turn = -chi[r, 0]
    bad[r, side] = _rotate(bad[r, side], bad[r, 4], bad[r, 4] - bad[r, 1], turn)
    chi_b, _ = tor.chi_angles(bad, topo.present, topo.restype)
    assert abs(np.degrees(chi_b[r, 0])) < 1.0
    assert wl.rotamers(chi_b, chi_m, topo.restype)["outlier"][r]
    # Ramachandran: alpha helix and beta strand are favoured, (phi, psi) = (0°, 0°) / (120°, 0°) are outliers
    phi = np.radians([-63.0, -120.0, 0.0, 120.0])
    psi = np.radians([-43.0, 130.0, 0.0, 0.0])
    ala = np.full(4, rc.RESTYPE_INDEX["ALA"])
    rama = wl.ramachandran(phi, psi, np.ones(4, bool), ala, np.full(4, -1), wells)
    assert rama["outlier"].tolist() == [False, False, True, True]
    assert not rama["not_favoured"][:2].any()
    gly = wl.ramachandran(np.radians([80.0]), np.radians([0.0]), np.ones(1, bool),
                          np.array([rc.RESTYPE_INDEX["GLY"]]), np.array([-1]), wells)
    assert not gly["outlier"][0]                              # left-handed region is allowed for glycine
    assert wl.fold_chi2(np.radians([[100.0, -80.0]]), np.array([rc.RESTYPE_INDEX["PHE"]] * 2))[0, 1] \
        == pytest.approx(np.radians(100.0))


def test_evaluate_reports_validity_for_generated_and_reference(t0922):
    u, _, _, _ = t0922
    r = evaluate(u, u)
    for key, _, _ in v.VALIDITY_KEYS:
        assert r[key] == pytest.approx(r[f"ref_{key}"])
    assert r["angle_deviation_mean"] == 0.0 and r["angle_deviation_residue_pct"] == 0.0
    assert r["overlap_per_1000_atoms"] <= 1.0


def test_eval_cli_prints_validity_table(tmp_path):
    from click.testing import CliRunner

    from latcpb.cli.evaluate import main

    res = CliRunner().invoke(main, [str(T0922), str(T0922), "-o", str(tmp_path / "rep"), "--no-plots"])
    assert res.exit_code == 0, res.output
    lines = res.output.splitlines()
    assert lines[1].startswith("validity (chain ends included)")
    row = next(ln for ln in lines if ln.startswith("angle outlier res. (%)"))
    assert row.split()[-2:] == ["1.35", "1.35"]                 # 1 of 74 residues, generated = reference
    assert lines.index(row) < next(k for k, ln in enumerate(lines) if ln.startswith("RMSD heavy"))


def test_fit_wells_on_a_small_folder(tmp_path):
    from latcpb.tools import fit_wells

    samples = fit_wells.collect(str(DATA / "mini"), frames=1, progress=False)
    n_general = len(samples["rama"]["general"][0])
    assert n_general > 60
    table = fit_wells.fit(samples)
    dens = np.asarray(table["rama"]["general"]["density"])
    assert dens.shape == (36, 36) and dens.max() == pytest.approx(1.0)
    phi, psi = samples["rama"]["general"]
    level = table["rama"]["general"]["levels"]["outlier"]
    below = (dens[wl._bin(phi), wl._bin(psi)] < level).mean()
    assert below <= wl.OUTLIER_FRACTION + 1e-9                 # the level excludes at most 0.5 % of the fit set
    assert np.asarray(table["rotamer"]["SER"]["density"]).shape == (36,)
    assert np.asarray(table["rotamer"]["LEU"]["density"]).shape == (36, 36)
