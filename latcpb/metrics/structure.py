"""Per-frame structural metrics on matched atoms (numpy + scipy cKDTree), units Å.

Coordinates are slot arrays ``[N, S, 3]`` with a mask ``[N, S]`` or flat atom arrays ``[M, 3]``; see
``latcpb.metrics.matching``. Definitions follow DESIGN.md "Metrics".
"""
from __future__ import annotations

import numpy as np
from scipy.spatial import cKDTree

from latcpb.geometry import residue_constants as rc
from latcpb.metrics.matching import BACKBONE_SLOTS, SIDE_CHAIN_SLOTS, MatchedSystem

BOND_TOLERANCE = 1.3          # bond = pair closer than 1.3 x sum of covalent radii
CLASH_DISTANCE = 1.2          # Å
CONTACT_DISTANCE = 5.0        # Å, denominator of the clash-pair share
BOND_LENGTH_TOLERANCE = 0.10  # bond score: generated length within ±10 % of the reference length
_RADII = np.array([rc.COVALENT_RADII.get(e, 0.76) for e in "CNOS"])
_MAX_BOND = BOND_TOLERANCE * 2 * _RADII.max()


def atom_sets(matched: MatchedSystem) -> dict[str, np.ndarray]:
    """Masks [N, S] of the RMSD atom sets: heavy, backbone (N, CA, C, O), sidechain (beyond CB), each with
    terminal residues excluded (plain name) and included (``_with_termini``)."""
    slot_sel = {"heavy": np.ones(rc.ATOMS_PER_RESIDUE, dtype=bool),
                "backbone": np.isin(np.arange(rc.ATOMS_PER_RESIDUE), BACKBONE_SLOTS),
                "sidechain": np.isin(np.arange(rc.ATOMS_PER_RESIDUE), SIDE_CHAIN_SLOTS)}
    out = {}
    for name, sel in slot_sel.items():
        out[name] = matched.mask & sel & ~matched.terminal[:, None]
        out[f"{name}_with_termini"] = matched.mask & sel
    return out


def rmsd(ref: np.ndarray, gen: np.ndarray, mask: np.ndarray | None = None) -> float:
    """RMSD (Å) without superposition. ref, gen [..., 3]; mask [...] selects atoms (nan if none)."""
    diff = ref - gen if mask is None else (ref - gen)[mask]
    if diff.size == 0:
        return float("nan")
    return float(np.sqrt((diff.reshape(-1, 3) ** 2).sum(-1).mean()))


def superposed_rmsd(ref: np.ndarray, gen: np.ndarray, mask: np.ndarray | None = None) -> float:
    """RMSD (Å) after optimal rigid superposition (Kabsch, rotation + translation, no reflection)."""
    p = (ref if mask is None else ref[mask]).reshape(-1, 3)
    q = (gen if mask is None else gen[mask]).reshape(-1, 3)
    if len(p) == 0:
        return float("nan")
    p = p - p.mean(0)
    q = q - q.mean(0)
    u, s, vt = np.linalg.svd(p.T @ q)
    d = np.sign(np.linalg.det(u @ vt)) or 1.0
    e = (p ** 2).sum() + (q ** 2).sum() - 2 * (s[0] + s[1] + d * s[2])
    return float(np.sqrt(max(e, 0.0) / len(p)))


def per_residue_squared_deviation(ref: np.ndarray, gen: np.ndarray, mask: np.ndarray):
    """Sum of squared deviations [N] (Å^2) and atom counts [N] per residue; ref, gen [N, S, 3], mask [N, S]."""
    sq = ((ref - gen) ** 2).sum(-1) * mask
    return sq.sum(-1), mask.sum(-1)


def atom_radii(elements: np.ndarray) -> np.ndarray:
    """Covalent radii (Å) [M] of element letters [M] (C 0.76, N 0.71, O 0.66, S 1.05)."""
    return np.array([rc.COVALENT_RADII.get(e, 0.76) for e in elements]) if len(elements) else np.zeros(0)


def perceive_bonds(xyz: np.ndarray, radii: np.ndarray) -> np.ndarray:
    """Bonds [B, 2] (i < j, sorted) = pairs closer than 1.3 x (r_i + r_j). xyz [M, 3] Å, radii [M] Å."""
    pairs = cKDTree(xyz).query_pairs(_MAX_BOND, output_type="ndarray")
    if len(pairs) == 0:
        return np.zeros((0, 2), dtype=np.int64)
    d = np.linalg.norm(xyz[pairs[:, 0]] - xyz[pairs[:, 1]], axis=-1)
    bonds = pairs[d < BOND_TOLERANCE * (radii[pairs[:, 0]] + radii[pairs[:, 1]])]
    return bonds[np.lexsort((bonds[:, 1], bonds[:, 0]))].astype(np.int64)


def _pair_keys(pairs: np.ndarray, n: int) -> np.ndarray:
    return pairs[:, 0].astype(np.int64) * n + pairs[:, 1]


def graph_edit_distance(ref_bonds: np.ndarray, gen_bonds: np.ndarray, n_atoms: int) -> tuple[float, float]:
    """GED of two bond graphs on the same M atoms: (signed |sum(A_ref - A_gen)| / sum(A_ref),
    corrected sum |A_ref - A_gen| / sum(A_ref)). Bonds [B, 2] with i < j."""
    n_ref = len(ref_bonds)
    if n_ref == 0:
        return float("nan"), float("nan")
    ref_k, gen_k = _pair_keys(ref_bonds, n_atoms), _pair_keys(gen_bonds, n_atoms)
    common = np.intersect1d(ref_k, gen_k).size
    signed = abs(n_ref - len(gen_k)) / n_ref
    corrected = (n_ref + len(gen_k) - 2 * common) / n_ref
    return float(signed), float(corrected)


def clash_scores(xyz: np.ndarray, residue: np.ndarray, bonds: np.ndarray, n_residues: int,
                 adjacent_previous: np.ndarray) -> tuple[float, float]:
    """Clashes of one structure: (% residues with a heavy-atom pair < 1.2 Å to a non-adjacent residue,
    100 x non-bonded pairs < 1.2 Å / non-bonded pairs < 5 Å).

    xyz [M, 3] Å; residue [M] residue index of each atom; bonds [B, 2] covalent bonds (excluded, from the
    reference topology); adjacent_previous [N] index of the bonded preceding residue or -1.
    """
    pairs = cKDTree(xyz).query_pairs(CONTACT_DISTANCE, output_type="ndarray")
    if len(pairs) == 0:
        return 0.0, 0.0
    m = len(xyz)
    pairs = pairs[~np.isin(_pair_keys(np.sort(pairs, axis=1), m), _pair_keys(bonds, m))]
    d = np.linalg.norm(xyz[pairs[:, 0]] - xyz[pairs[:, 1]], axis=-1)
    close = pairs[d < CLASH_DISTANCE]
    pair_share = 100.0 * len(close) / max(len(pairs), 1)
    ri, rj = residue[close[:, 0]], residue[close[:, 1]]
    lo, hi = np.minimum(ri, rj), np.maximum(ri, rj)
    non_adjacent = (lo != hi) & (adjacent_previous[hi] != lo)
    clashing = np.unique(np.concatenate([lo[non_adjacent], hi[non_adjacent]]))
    return 100.0 * len(clashing) / max(n_residues, 1), float(pair_share)


def bond_length_scores(ref_xyz: np.ndarray, gen_xyz: np.ndarray, bonds: np.ndarray) -> tuple[float, float]:
    """(share of reference bonds whose generated length is within ±10 % of the reference length (0..1),
    RMS bond-length deviation Å). ref_xyz, gen_xyz [M, 3]; bonds [B, 2] perceived on the reference."""
    if len(bonds) == 0:
        return float("nan"), float("nan")
    d_ref = np.linalg.norm(ref_xyz[bonds[:, 0]] - ref_xyz[bonds[:, 1]], axis=-1)
    d_gen = np.linalg.norm(gen_xyz[bonds[:, 0]] - gen_xyz[bonds[:, 1]], axis=-1)
    ok = np.abs(d_gen - d_ref) <= BOND_LENGTH_TOLERANCE * d_ref
    return float(ok.mean()), float(np.sqrt(((d_gen - d_ref) ** 2).mean()))


def d_residues(xyz: np.ndarray, present: np.ndarray) -> np.ndarray:
    """[N] bool: residue has D configuration at CA (signed volume (N-CA) x (C-CA) . (CB-CA) < 0).

    xyz [N, S, 3]; present [N, S]. Residues lacking N, CA, C or CB (glycine) are False.
    """
    n, ca, c, cb = xyz[:, 0], xyz[:, 1], xyz[:, 2], xyz[:, 4]
    vol = np.einsum("ij,ij->i", np.cross(n - ca, c - ca), cb - ca)
    return (vol < 0) & present[:, [0, 1, 2, 4]].all(-1)


def ca_rmsd(ref: np.ndarray, gen: np.ndarray, mask: np.ndarray) -> float:
    """CA preservation: RMSD (Å, no superposition) of the CA atoms; ref, gen [N, S, 3]; mask [N, S]."""
    return rmsd(ref[:, 1], gen[:, 1], mask[:, 1])
