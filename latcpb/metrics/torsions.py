"""Backbone and side-chain torsions of slot coordinates, cis peptides and torsion-distribution KL (numpy).

Shapes: ``xyz [..., N, S, 3]`` Å (leading frame dimensions allowed), ``present [N, S]`` bool. Angles in radians
in (-pi, pi]; histograms and reports in degrees.
"""
from __future__ import annotations

import numpy as np

from latcpb.geometry import residue_constants as rc

TORSIONS = ("phi", "psi", "chi1", "chi2")
N_BINS = 36
PSEUDO_COUNT = 1e-6   # added to every bin probability before KL (then renormalised)
CIS_LIMIT_DEG = 30.0
_PRO = rc.RESTYPE_INDEX["PRO"]


def _chi_slot_table() -> np.ndarray:
    """[20, 4, 4] slots of the four atoms of chi1..chi4 per residue type (-1 where undefined)."""
    table = np.full((rc.N_RESTYPES, 4, 4), -1, dtype=np.int64)
    for r, name in enumerate(rc.RESTYPES):
        index = {a: k for k, a in enumerate(rc.slot_names(name)) if a}
        for c, quad in enumerate(rc.CHI_ATOMS[name]):
            table[r, c] = [index[a] for a in quad]
    return table


CHI_SLOTS = _chi_slot_table()


def dihedral(a: np.ndarray, b: np.ndarray, c: np.ndarray, d: np.ndarray) -> np.ndarray:
    """Torsion a-b-c-d (rad, IUPAC sign) over leading dimensions; inputs [..., 3] Å."""
    b0, b1, b2 = a - b, c - b, d - c
    b1 = b1 / np.maximum(np.linalg.norm(b1, axis=-1, keepdims=True), 1e-12)
    v = b0 - (b0 * b1).sum(-1, keepdims=True) * b1
    w = b2 - (b2 * b1).sum(-1, keepdims=True) * b1
    return np.arctan2((np.cross(b1, v) * w).sum(-1), (v * w).sum(-1))


def backbone_torsions(xyz: np.ndarray, present: np.ndarray, previous: np.ndarray):
    """phi, psi, omega [..., N] rad and their masks [N] bool.

    previous [N]: index of the bonded preceding residue (-1 at chain starts). phi_i = C_{i-1}-N_i-CA_i-C_i,
    psi_i = N_i-CA_i-C_i-N_{i+1}, omega_i = CA_{i-1}-C_{i-1}-N_i-CA_i (the peptide bond before residue i).
    """
    n_res = present.shape[0]
    has_prev = previous >= 0
    prev = np.where(has_prev, previous, 0)
    nxt = np.full(n_res, -1, dtype=np.int64)
    nxt[previous[has_prev]] = np.flatnonzero(has_prev)
    has_next = nxt >= 0
    nx = np.where(has_next, nxt, 0)
    n, ca, c = xyz[..., 0, :], xyz[..., 1, :], xyz[..., 2, :]
    phi = dihedral(c[..., prev, :], n, ca, c)
    psi = dihedral(n, ca, c, n[..., nx, :])
    omega = dihedral(ca[..., prev, :], c[..., prev, :], n, ca)
    bb = present[:, :3].all(-1)
    phi_mask = has_prev & bb & present[prev, 2]
    psi_mask = has_next & bb & present[nx, 0]
    omega_mask = has_prev & present[:, 0] & present[:, 1] & present[prev, 1] & present[prev, 2]
    return phi, psi, omega, phi_mask, psi_mask, omega_mask


def chi_angles(xyz: np.ndarray, present: np.ndarray, restype: np.ndarray):
    """Side-chain torsions chi1..chi4 [..., N, 4] rad and mask [N, 4] (defined and all four atoms present)."""
    slots = CHI_SLOTS[restype]                                  # [N, 4, 4]
    safe = np.maximum(slots, 0)
    rows = np.arange(len(restype))[:, None, None]
    pts = xyz[..., rows, safe, :]                               # [..., N, 4, 4, 3]
    chi = dihedral(pts[..., 0, :], pts[..., 1, :], pts[..., 2, :], pts[..., 3, :])
    mask = (slots >= 0).all(-1) & present[rows, safe].all(-1)
    return chi, mask


def cis_peptides(omega: np.ndarray, omega_mask: np.ndarray, restype: np.ndarray) -> np.ndarray:
    """[..., N] bool: cis peptide bond (|omega| < 30°) before a non-proline residue."""
    return (np.abs(omega) < np.deg2rad(CIS_LIMIT_DEG)) & omega_mask & (restype != _PRO)


def torsion_set(xyz: np.ndarray, present: np.ndarray, restype: np.ndarray, previous: np.ndarray) -> dict:
    """Torsions of one structure or frames: {name: (angles [..., N] rad, mask [N])} for phi, psi, chi1, chi2."""
    phi, psi, _, phi_m, psi_m, _ = backbone_torsions(xyz, present, previous)
    chi, chi_m = chi_angles(xyz, present, restype)
    return {"phi": (phi, phi_m), "psi": (psi, psi_m), "chi1": (chi[..., 0], chi_m[:, 0]),
            "chi2": (chi[..., 1], chi_m[:, 1])}


def histogram(angles_rad: np.ndarray, bins: int = N_BINS) -> np.ndarray:
    """Counts [bins] of angles over [-180°, 180°)."""
    deg = np.rad2deg(np.asarray(angles_rad, dtype=np.float64).ravel())
    deg = (deg + 180.0) % 360.0 - 180.0
    return np.histogram(deg, bins=bins, range=(-180.0, 180.0))[0]


def kl_divergence(p_counts: np.ndarray, q_counts: np.ndarray, pseudo_count: float = PSEUDO_COUNT) -> float:
    """KL(p || q) (nats) of two histograms; ``pseudo_count`` is added to each bin probability, then renormalised.
    nan if either histogram is empty."""
    p_counts = np.asarray(p_counts, dtype=np.float64)
    q_counts = np.asarray(q_counts, dtype=np.float64)
    if p_counts.sum() == 0 or q_counts.sum() == 0:
        return float("nan")
    p = p_counts / p_counts.sum() + pseudo_count
    q = q_counts / q_counts.sum() + pseudo_count
    p, q = p / p.sum(), q / q.sum()
    return float((p * np.log(p / q)).sum())
