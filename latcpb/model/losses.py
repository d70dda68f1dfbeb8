"""Reconstruction loss L_R (Eq. 12) and clash loss L_E (Eq. 13) on packed systems [R, 15, ...]."""
from __future__ import annotations

import torch

from latcpb.geometry import residue_constants as rc
from latcpb.geometry.internal_coords import cartesian_to_internal

S = rc.ATOMS_PER_RESIDUE
_PRO = rc.RESTYPE_INDEX["PRO"]
_CYS = rc.RESTYPE_INDEX["CYS"]
PEPTIDE_BOND = 1.329  # Å, C-N (1.341 before proline)
DISULFIDE_MIN_DISTANCE = 1.9  # Å: an SS bond is 2.04 Å; closer SG pairs are clashes


def angle_chord(cos_a, sin_a, cos_b, sin_b):
    """sqrt(2 (1 - cos(a - b)) + 1e-7): chord between two angles given as unit vectors [...]."""
    return torch.sqrt((2.0 * (1.0 - (cos_a * cos_b + sin_a * sin_b))).clamp(min=0.0) + 1e-7)


def _masked_mean(x, mask):
    m = mask.to(x.dtype)
    return (x * m).sum() / m.sum().clamp(min=1.0)


def internal_targets(xyz, present, lt):
    """True (theta, tau) [R, 15] rad of the reference and their validity [R, 15] bool (atom and parents present)."""
    _, theta, tau = cartesian_to_internal(xyz[None], lt)
    parents_ok = torch.gather(present[:, None, :].expand(-1, S, -1), 2, lt.parents).all(-1)
    valid = present & parents_ok & lt.atom_mask
    valid[:, 1] = False
    return theta[0], tau[0], valid


def reconstruction_loss(pred_xyz, internals, xyz, present, residue_mask, lt, first, last, weights):
    """L_R = w_xyz * MSE(coords) + w_bond * peptide bond + w_angle * theta chord + w_torsion * tau chord.

    pred_xyz, xyz [R, 15, 3] Å; present [R, 15]; residue_mask [R] (residues scored); first/last [R] chain ends.
    Intra-residue bond lengths are fixed by the table, so the bond term scores the peptide bond C_i-N_i+1.
    Returns (total, dict of terms).
    """
    cos_t, sin_t, cos_tau, sin_tau, _ = internals
    theta, tau, valid = internal_targets(xyz, present, lt)
    valid = valid & residue_mask[:, None]
    atoms = present & lt.atom_mask & residue_mask[:, None]
    atoms[:, 1] = False
    mse = _masked_mean(((pred_xyz - xyz) ** 2).sum(-1), atoms)
    l_angle = _masked_mean(angle_chord(cos_t, sin_t, torch.cos(theta), torch.sin(theta)), valid)
    l_tors = _masked_mean(angle_chord(cos_tau, sin_tau, torch.cos(tau), torch.sin(tau)), valid)
    nxt = torch.arange(1, len(last) + 1, device=xyz.device).clamp(max=len(last) - 1)
    pep_ok = ~last & residue_mask & present[:, 2] & present[nxt, 0]
    target = torch.where(lt.restype[nxt] == _PRO, 1.341, PEPTIDE_BOND).to(xyz.dtype)
    pep = torch.linalg.norm(pred_xyz[:, 2] - pred_xyz[nxt, 0], dim=-1)
    l_bond = _masked_mean((pep - target) ** 2, pep_ok)
    total = (weights["xyz"] * mse + weights["bond"] * l_bond + weights["angle"] * l_angle
             + weights["torsion"] * l_tors)
    return total, {"mse": mse.detach(), "bond": l_bond.detach(), "angle": l_angle.detach(),
                   "torsion": l_tors.detach()}


def _neighbour_exclusion(device):
    """[15, 15] bool: atom pairs (residue i, residue i+1) excluded from clashes (bonded geometry)."""
    ex = torch.zeros(S, S, dtype=torch.bool, device=device)
    ex[:4, :5] = True      # backbone_i x (backbone, CB)_{i+1}
    ex[4, 0] = True        # CB_i - N_{i+1}
    return ex


def clash_loss(pred_xyz, lt, src, dst, last, residue_mask, clash_distance=2.5, ca_cutoff=9.0):
    """L_E: sum of hinge max(clash_distance - d, 0) over heavy-atom pairs of different residues, per scored residue.

    Pairs come from the residue graph (src, dst) [E] with CA-CA < ca_cutoff; peptide-bonded neighbours' backbone
    pairs (and proline CD with the preceding backbone) are excluded; cysteine SG-SG pairs (possible disulfides) count
    only below ``DISULFIDE_MIN_DISTANCE``.
    """
    ca = pred_xyz[:, 1]
    keep = (src > dst) & (torch.linalg.norm(ca[src] - ca[dst], dim=-1) < ca_cutoff)
    keep = keep & (residue_mask[src] | residue_mask[dst])
    i, j = dst[keep], src[keep]                                    # i < j
    if i.numel() == 0:
        return pred_xyz.sum() * 0.0
    d = torch.cdist(pred_xyz[i], pred_xyz[j], compute_mode="donot_use_mm_for_euclid_dist")  # [P, 15, 15]
    mask = lt.atom_mask[i][:, :, None] & lt.atom_mask[j][:, None, :]
    bonded = (j == i + 1) & ~last[i]
    ex = _neighbour_exclusion(pred_xyz.device)
    pro_cd = torch.zeros(S, S, dtype=torch.bool, device=pred_xyz.device)
    pro_cd[:4, 6] = True
    excl = ex[None] | (pro_cd[None] & (lt.restype[j] == _PRO)[:, None, None])
    mask = mask & ~(bonded[:, None, None] & excl)
    ss = (lt.restype[i] == _CYS) & (lt.restype[j] == _CYS)
    mask[:, 5, 5] &= ~ss
    hinge = torch.relu(clash_distance - d) * mask
    # two cysteine SG may bond (2.04 Å) but not come closer than DISULFIDE_MIN_DISTANCE
    disulfide = torch.relu(DISULFIDE_MIN_DISTANCE - d[:, 5, 5]) * ss
    return (hinge.sum() + disulfide.sum()) / residue_mask.sum().clamp(min=1)
