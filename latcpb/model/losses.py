"""Reconstruction loss L_R (Eq. 12) and clash loss L_E (Eq. 13) on packed systems [R, 15, ...]."""
from __future__ import annotations

import torch
import torch.nn.functional as F

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


def dof_targets(xyz, present, lt):
    """Targets of ``DofDecoder`` from a reference [R, 15, 3] Å with atoms ``present`` [R, 15]: (Torsions of the
    packed system, peptide_ok [R], chi_ok [R, 4], ends_ok [R, 3]) where the defining atoms are present."""
    from latcpb.geometry import rigid_groups as rg
    from latcpb.geometry.backbone import chain_flags
    from latcpb.geometry.structure import extract_torsions

    target = extract_torsions(xyz[None], lt)
    target = type(target)(target.peptide[0], target.chi[0], target.ends[0])
    first, last, has_next = chain_flags(lt)
    n = len(lt.restype)
    nxt = torch.arange(1, n + 1, device=xyz.device).clamp(max=n - 1)
    prv = (torch.arange(n, device=xyz.device) - 1).clamp(min=0)
    peptide_ok = has_next & present[:, 1] & present[:, 2] & present[:, 3] & present[nxt, 0] & present[nxt, 1]
    quads = torch.as_tensor(rg.RESTYPE_CHI_QUADS, device=xyz.device)[lt.restype]             # [R, 4, 4]
    chi_mask = torch.as_tensor(rc.RESTYPE_CHI_MASK, device=xyz.device)[lt.restype]
    chi_ok = chi_mask & torch.gather(present[:, None, :].expand(-1, 4, -1), 2, quads).all(-1)
    bb_ok = present[:, :4].all(-1)
    ends_ok = torch.stack([first & bb_ok & present[nxt, 0], last & bb_ok & present[prv, 2], last & bb_ok], -1)
    return target, peptide_ok, chi_ok, ends_ok


def dof_loss(decoder, out, xyz, present, residue_mask, lt, weights):
    """Loss of ``DofDecoder`` output ``out`` against the reference xyz [R, 15, 3] Å: chord of the peptide rotations
    and chain-end torsions, cross-entropy of the chi bins + chord of chi in the true bin (its offset), and the
    Cartesian MSE of the structure built with the true bins (teacher forcing; every atom but CA). Returns
    (total, built xyz [R, 15, 3], dict of terms)."""
    from latcpb.geometry.structure import build_structure

    target, peptide_ok, chi_ok, ends_ok = dof_targets(xyz, present, lt)
    m = residue_mask
    chord = lambda a, b: angle_chord(a[..., 0], a[..., 1], b[..., 0], b[..., 1])  # noqa: E731
    l_pep = _masked_mean(chord(out["peptide"], target.peptide), peptide_ok & m)
    l_end = _masked_mean(chord(out["ends"], target.ends), ends_ok & m[:, None])
    chi_true = torch.atan2(target.chi[..., 1], target.chi[..., 0])
    bins = decoder.chi_bin(chi_true)
    ce = F.cross_entropy(out["chi_logits"].reshape(-1, decoder.bins), bins.reshape(-1), reduction="none")
    l_bin = _masked_mean(ce.view_as(chi_true), chi_ok & m[:, None])
    forced = decoder.torsions(out, chi_bins=bins)
    l_off = _masked_mean(chord(forced.chi, target.chi), chi_ok & m[:, None])
    pred = build_structure(xyz[None, :, 1], type(forced)(forced.peptide[None], forced.chi[None], forced.ends[None]),
                           lt, limit_n_ca_c=False)[0]
    atoms = present & lt.atom_mask & m[:, None]
    atoms[:, 1] = False
    mse = _masked_mean(((pred - xyz) ** 2).sum(-1), atoms)
    total = (weights["xyz"] * mse + weights["torsion"] * (l_pep + l_end + l_off) + weights["chi_bins"] * l_bin)
    return total, pred, {"mse": mse.detach(), "peptide": l_pep.detach(), "ends": l_end.detach(),
                         "chi_ce": l_bin.detach(), "chi_offset": l_off.detach()}

