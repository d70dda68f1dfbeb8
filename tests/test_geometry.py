"""Geometry core on real structures: exact internal-coordinate round trips, torsions against MDAnalysis as an
independent oracle, finite NeRF gradients, every residue type, float32/float64, two-residue chains, and a
property-based round trip from random internal coordinates."""
from __future__ import annotations

import math

import numpy as np
import pytest
import torch
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from MDAnalysis.lib.distances import calc_dihedrals

from conftest import quiet_universe, val_entry_params
from latcpb.data.featurize import map_allatom
from latcpb.data.names import normalize_atomname
from latcpb.geometry import residue_constants as rc
from latcpb.geometry.internal_coords import (LayoutTensors, ResidueLayout, cartesian_to_internal, chi_angles,
                                             internal_to_cartesian, internal_to_cartesian_angles)
from latcpb.geometry.nerf import dihedral

# Standard heavy-atom counts of the amino acids without OXT (textbook values, independent of the tables).
HEAVY_ATOMS = {"ALA": 5, "ARG": 11, "ASN": 8, "ASP": 8, "CYS": 6, "GLN": 9, "GLU": 9, "GLY": 4, "HIS": 10,
               "ILE": 8, "LEU": 8, "LYS": 9, "MET": 8, "PHE": 11, "PRO": 7, "SER": 6, "THR": 7, "TRP": 14,
               "TYR": 12, "VAL": 7}
# A few Engh & Huber (1991) bond lengths (Å), written out here independently of residue_constants.
ENGH_HUBER = {("ALA", "N"): 1.458, ("ALA", "C"): 1.525, ("ALA", "O"): 1.231, ("ALA", "CB"): 1.521,
              ("GLY", "N"): 1.451, ("GLY", "C"): 1.516, ("PRO", "N"): 1.466, ("SER", "CB"): 1.530,
              ("VAL", "CB"): 1.540, ("CYS", "SG"): 1.808, ("MET", "SD"): 1.803, ("MET", "CE"): 1.791,
              ("SER", "OG"): 1.417, ("LYS", "NZ"): 1.489, ("TYR", "OH"): 1.376, ("ARG", "NE"): 1.460,
              ("ASP", "OD1"): 1.249, ("ASN", "OD1"): 1.231, ("ASN", "ND2"): 1.328, ("HIS", "CG"): 1.497}


def wrap(x):
    return np.arctan2(np.sin(x), np.cos(x))


def _reference(u):
    """Mapping, LayoutTensors and float64 slot coordinates [F, N, 15, 3] of all frames of an all-atom Universe."""
    mapping = map_allatom(u.atoms, source="ref")
    xyz = np.stack([mapping.slots(u.atoms.positions.astype(np.float64), canonical=False) for _ in u.trajectory])
    lt = LayoutTensors(mapping.topology.layout)
    return mapping, lt, torch.as_tensor(xyz)


def _rooted(mapping, lt) -> np.ndarray:
    """[N, 15] slots present in the input whose whole chain of parents is present too."""
    present = mapping.present & mapping.topology.layout.atom_mask
    ok = np.zeros_like(present)
    ok[:, 1] = present[:, 1]
    ok[:, 0] = present[:, 0]                       # N: placed from CA atoms only
    ok[:, 2] = present[:, 2] & ok[:, 0]            # C: from CA atoms and N
    parents = lt.parents.numpy()
    level = lt.level.numpy()
    rows = np.arange(len(present))[:, None]
    for k in range(rc.N_BUILD_LEVELS):
        at = level == k
        parents_ok = ok[rows, parents[..., 0]] & ok[rows, parents[..., 1]] & ok[rows, parents[..., 2]]
        ok = np.where(at, present & parents_ok, ok)
    return ok


def _round_trip_error(u):
    mapping, lt, xyz = _reference(u)
    d, theta, tau = cartesian_to_internal(xyz, lt)
    rebuilt = internal_to_cartesian_angles(xyz[..., 1, :], lt, d, theta, tau)
    ok = _rooted(mapping, lt)
    err = torch.linalg.norm(rebuilt - xyz, dim=-1).numpy()[:, ok]
    return err, ok, mapping


@pytest.mark.parametrize("val_entry", val_entry_params(), indirect=True)
def test_round_trip_val_entry(val_entry):
    u = quiet_universe(val_entry["pdb"])
    err, ok, mapping = _round_trip_error(u)
    assert err.max() < 1e-3
    # nearly every heavy atom is checked (only atoms with a missing parent are skipped)
    assert ok.sum() >= 0.98 * mapping.present.sum()


def test_round_trip_adk_charmm_trajectory():
    """CHARMM names (HSD, OT1/OT2, ILE CD) and several frames of the MDAnalysisTests adenylate kinase."""
    from MDAnalysis.coordinates.memory import MemoryReader
    from MDAnalysisTests.datafiles import DCD, PSF

    u = quiet_universe(PSF, DCD)
    u.load_new(np.stack([u.trajectory[i].positions.copy() for i in (0, 40, 97)]), format=MemoryReader)
    err, ok, mapping = _round_trip_error(u)
    assert err.shape[0] == 3 and err.max() < 1e-3
    # all 1656 heavy atoms of AdK (214 residues + OXT) are mapped and checked
    assert ok.sum() == mapping.present.sum() == len(u.select_atoms("not name H*"))


def _oracle_backbone(u, mapping):
    """phi, psi, omega per residue row from MDAnalysis atoms picked by name; NaN where undefined."""
    res = list(mapping.ca_atoms.residues)
    n = len(res)
    pos = {}
    for i, r in enumerate(res):
        for name in ("N", "CA", "C"):
            sel = r.atoms.select_atoms(f"name {name}")
            pos[i, name] = sel.positions[0].astype(np.float64) if len(sel) else None
    phi, psi, omega = (np.full(n, np.nan) for _ in range(3))
    chain = mapping.topology.layout.chain_index
    for i in range(1, n):
        q = [pos[i - 1, "CA"], pos[i - 1, "C"], pos[i, "N"], pos[i, "CA"], pos[i, "C"]]
        if chain[i] != chain[i - 1] or any(p is None for p in q) or np.linalg.norm(q[1] - q[2]) > 2.0:
            continue
        omega[i] = calc_dihedrals(*[p[None] for p in q[:4]])[0]
        phi[i] = calc_dihedrals(*[p[None] for p in q[1:]])[0]
        psi[i - 1] = calc_dihedrals(*[p[None] for p in (pos[i - 1, "N"], q[0], q[1], q[2])])[0] \
            if pos[i - 1, "N"] is not None else np.nan
    return phi, psi, omega


def _oracle_chi(u, mapping):
    res = list(mapping.ca_atoms.residues)
    chi = np.full((len(res), 4), np.nan)
    for i, r in enumerate(res):
        resname = mapping.topology.resnames[i]
        names = {normalize_atomname(resname, a.name): a.position.astype(np.float64) for a in r.atoms}
        for k, quad in enumerate(rc.CHI_ATOMS[resname]):
            if all(a in names for a in quad):
                chi[i, k] = calc_dihedrals(*[names[a][None] for a in quad])[0]
    return chi


@pytest.mark.parametrize("source", ["2JOF", "T0922", "adk"])
def test_torsions_match_mdanalysis(source, request):
    if source == "adk":
        from MDAnalysisTests.datafiles import PSF, DCD
        u = quiet_universe(PSF, DCD)
    else:
        val_dir = request.getfixturevalue("val_dir")
        u = quiet_universe(val_dir / f"{source}.pdb")
    mapping, lt, xyz = _reference(u)
    d, theta, tau = cartesian_to_internal(xyz, lt)
    rebuilt = internal_to_cartesian_angles(xyz[..., 1, :], lt, d, theta, tau)[0].numpy()
    # chi straight from the internal torsions
    chi, chi_mask = chi_angles(tau, lt)
    oracle_chi = _oracle_chi(u, mapping)
    defined = ~np.isnan(oracle_chi) & chi_mask.numpy()
    assert defined.sum() > 20
    assert np.abs(wrap(chi[0].numpy()[defined] - oracle_chi[defined])).max() < 1e-4
    # no chi of the oracle is missing from ours
    assert not (~np.isnan(oracle_chi) & ~chi_mask.numpy()).any()
    # backbone torsions of the structure rebuilt from internal coordinates
    phi, psi, omega = _oracle_backbone(u, mapping)
    n_xyz, ca_xyz, c_xyz = (torch.as_tensor(rebuilt[:, k]) for k in range(3))
    ours_phi = dihedral(c_xyz[:-1], n_xyz[1:], ca_xyz[1:], c_xyz[1:]).numpy()
    ours_psi = dihedral(n_xyz[:-1], ca_xyz[:-1], c_xyz[:-1], n_xyz[1:]).numpy()
    ours_omega = dihedral(ca_xyz[:-1], c_xyz[:-1], n_xyz[1:], ca_xyz[1:]).numpy()
    for ours, oracle in ((ours_phi, phi[1:]), (ours_psi, psi[:-1]), (ours_omega, omega[1:])):
        m = ~np.isnan(oracle)
        assert m.sum() >= 0.8 * len(oracle)
        assert np.abs(wrap(ours[m] - oracle[m])).max() < 1e-4


@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
def test_nerf_gradients_finite(dtype, val_dir):
    u = quiet_universe(val_dir / "2JOF.pdb")
    mapping, lt, xyz = _reference(u)
    xyz = xyz.to(dtype)
    d, theta, tau = (t.detach().clone().requires_grad_(True) for t in cartesian_to_internal(xyz, lt))
    ca = xyz[..., 1, :].clone().requires_grad_(True)
    out = internal_to_cartesian_angles(ca, lt, d, theta, tau)
    assert out.dtype == dtype
    mask = torch.as_tensor(lt.atom_mask)
    loss = (out[:, mask] ** 2).sum() + out[:, mask].sin().sum()
    loss.backward()
    for g in (ca.grad, d.grad, theta.grad, tau.grad):
        assert g is not None and torch.isfinite(g).all()
    assert ca.grad.abs().sum() > 0 and tau.grad.abs().sum() > 0


def _trace(n, seed=0, step=3.8):
    """A non-degenerate CA trace: random walk with CA-CA-CA angles between 80 and 140 degrees."""
    rng = np.random.default_rng(seed)
    pts = [np.zeros(3), np.array([step, 0, 0]), np.array([step + step * math.cos(1.2), step * math.sin(1.2), 0])]
    while len(pts) < n:
        a, b, c = (torch.as_tensor(p) for p in pts[-3:])
        ang = torch.tensor(math.radians(rng.uniform(80, 140)), dtype=torch.float64)
        tor = torch.tensor(rng.uniform(-math.pi, math.pi), dtype=torch.float64)
        from latcpb.geometry.nerf import place_atom_angles
        pts.append(place_atom_angles(a, b, c, torch.tensor(step, dtype=torch.float64), ang, tor).numpy())
    return np.stack(pts[:n])


@pytest.mark.parametrize("resname", rc.RESTYPES)
def test_every_residue_type_builds(resname):
    r = rc.RESTYPE_INDEX[resname]
    layout = ResidueLayout.from_chains([r] * 3, [0, 0, 0])
    lt = LayoutTensors(layout)
    ca = torch.as_tensor(_trace(3, seed=r))[None]
    rng = np.random.default_rng(r)
    theta = torch.as_tensor(np.radians(rng.uniform(105, 125, size=(1, 3, 15))))
    tau = torch.as_tensor(rng.uniform(-math.pi, math.pi, size=(1, 3, 15)))
    xyz = internal_to_cartesian_angles(ca, lt, lt.bond_lengths.to(torch.float64), theta, tau)[0].numpy()
    mask = layout.atom_mask
    names = rc.slot_names(resname)
    # atom counts: standard heavy atoms, + OXT only on the chain end
    assert [int(m.sum()) for m in mask] == [HEAVY_ATOMS[resname]] * 2 + [HEAVY_ATOMS[resname] + 1]
    assert [n for n, m in zip(names, mask[2]) if m][-1] == "OXT"
    assert len(set(n for n in names if n)) == HEAVY_ATOMS[resname] + 1
    assert np.isfinite(xyz).all()
    # input CA kept
    assert np.abs(xyz[:, 1] - ca[0].numpy()).max() < 1e-9
    # bond to the bonded parent = Engh & Huber; every atom reachable from the backbone through its parents
    parents = lt.parents.numpy()
    for i in range(3):
        reached = {0, 1, 2}
        for k in np.argsort(lt.level.numpy()[i], kind="stable"):
            if not mask[i, k] or k in (0, 1, 2):
                continue
            c = parents[i, k, 2]
            assert c in reached, (resname, names[k])
            reached.add(int(k))
            assert abs(np.linalg.norm(xyz[i, k] - xyz[i, c]) - rc.bond_length(resname, names[k])) < 1e-9
        assert reached == set(np.flatnonzero(mask[i]).tolist())
        assert abs(np.linalg.norm(xyz[i, 0] - xyz[i, 1]) - rc.bond_length(resname, "N")) < 1e-9
        assert abs(np.linalg.norm(xyz[i, 2] - xyz[i, 1]) - rc.bond_length(resname, "C")) < 1e-9
    for (res, atom), value in ENGH_HUBER.items():
        if res == resname:
            assert rc.bond_length(res, atom) == pytest.approx(value, abs=1e-3)


@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
def test_round_trip_dtypes_and_two_residue_chains(dtype, val_dir):
    """float32 and float64; the structure cut into 2-residue chains (virtual reference) still round-trips."""
    u = quiet_universe(val_dir / "2JOF.pdb")
    mapping = map_allatom(u.atoms)
    xyz = torch.as_tensor(mapping.slots(u.atoms.positions.astype(np.float64))[None], dtype=dtype)
    restype = mapping.topology.layout.restype
    for chains in (mapping.topology.layout.chain_index, np.arange(len(restype)) // 2):
        layout = ResidueLayout.from_chains(restype, chains)
        lt = LayoutTensors(layout)
        d, theta, tau = cartesian_to_internal(xyz, lt)
        rebuilt = internal_to_cartesian(xyz[..., 1, :], lt, d, theta.cos(), theta.sin(), tau.cos(), tau.sin())
        assert rebuilt.dtype == dtype
        ok = mapping.present & layout.atom_mask
        err = torch.linalg.norm(rebuilt - xyz, dim=-1)[0].numpy()[ok]
        assert err.max() < (1e-3 if dtype == torch.float32 else 1e-9)


def test_two_residue_chain_alone_builds():
    layout = ResidueLayout.from_chains([rc.RESTYPE_INDEX["TRP"], rc.RESTYPE_INDEX["LYS"]], [0, 0])
    lt = LayoutTensors(layout)
    ca = torch.tensor([[[0.0, 0.0, 0.0], [3.8, 0.0, 0.0]]], dtype=torch.float64)
    theta = torch.full((1, 2, 15), math.radians(111.0), dtype=torch.float64)
    tau = torch.full((1, 2, 15), math.radians(-60.0), dtype=torch.float64)
    xyz = internal_to_cartesian_angles(ca, lt, lt.bond_lengths.to(torch.float64), theta, tau)
    assert torch.isfinite(xyz).all()
    d, theta2, tau2 = cartesian_to_internal(xyz, lt)
    mask = torch.as_tensor(layout.atom_mask).clone()
    mask[:, 1] = False
    assert torch.allclose(theta2[0][mask], theta[0][mask], atol=1e-9)
    assert np.abs(wrap((tau2 - tau)[0][mask].numpy())).max() < 1e-9


# ---------------------------------------------------------------- property-based: random internal coordinates


@st.composite
def _systems(draw):
    n = draw(st.integers(min_value=2, max_value=7))
    types = draw(st.lists(st.integers(0, rc.N_RESTYPES - 1), min_size=n, max_size=n))
    split = draw(st.integers(min_value=0, max_value=n))  # second chain start (if it leaves >= 2 residues each)
    chains = [0] * n if split < 2 or n - split < 2 else [0] * split + [1] * (n - split)
    seed = draw(st.integers(0, 2 ** 31 - 1))
    return types, chains, seed


@settings(max_examples=40, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(_systems())
def test_random_internal_coordinates_round_trip(system):
    types, chains, seed = system
    rng = np.random.default_rng(seed)
    n = len(types)
    layout = ResidueLayout.from_chains(types, chains)
    lt = LayoutTensors(layout)
    ca = torch.as_tensor(_trace(n, seed=seed))[None]
    bond = torch.as_tensor(rng.uniform(1.0, 2.0, size=(1, n, 15)))
    theta = torch.as_tensor(np.radians(rng.uniform(35.0, 145.0, size=(1, n, 15))))
    tau = torch.as_tensor(rng.uniform(-math.pi, math.pi, size=(1, n, 15)))
    xyz = internal_to_cartesian_angles(ca, lt, bond, theta, tau)
    d2, theta2, tau2 = cartesian_to_internal(xyz, lt)
    mask = torch.as_tensor(layout.atom_mask).clone()
    mask[:, 1] = False  # CA has no internal coordinates
    assert torch.allclose(d2[0][mask], bond[0][mask], atol=1e-8)
    assert torch.allclose(theta2[0][mask], theta[0][mask], atol=1e-7)
    assert np.abs(wrap((tau2 - tau)[0][mask].numpy())).max() < 1e-7
