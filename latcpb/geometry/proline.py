"""Proline ring closure: CG and CD of every proline from its backbone (N, CA, CB) so that the ring closes exactly.

CB-CG, CG-CD and CA-CB-CG are ideal. For every chi1 of a 1-degree grid (``CHI1_RANGE_DEG``) and CB-CG-CD of a
small grid around its ideal value (``THETA_CD_STEPS_DEG``) the chi2 that makes N-CD its Engh & Huber length is solved
in closed form (two solutions); among the closed rings the one with the least sum of (the ring angles CB-CG-CD,
CG-CD-N, CA-N-CD and the peptide angle C-N-CD off Engh & Huber, in sigma)^2 + (CD out of the plane of C_i-1, N,
CA / ``N_PLANE_SCALE``)^2 + (chi1, chi2 off the requested ones / ``MOVE_SCALE_DEG``)^2 wins. So N-CD is exact by
construction and the angles at CG, CD and N are the best the backbone admits (the backbone limiter keeps proline phi
where they can be good).
"""
from __future__ import annotations

import math

import torch
import torch.nn.functional as F

from latcpb.geometry import residue_constants as rc
from latcpb.geometry import rigid_groups as rg
from latcpb.geometry.nerf import bond_angle, place_atom_angles

CHI1_RANGE_DEG = 60.0      # proline chi1 lies within +-45 degrees (both puckers)
N_PLANE_SCALE = 0.05       # Å of CD out of the C_i-1, N, CA plane that cost as much as one sigma of a ring angle
OUTLIER_GUARD_SIGMA = 3.5  # ring angles beyond this many sigma cost 100x more (MolProbity's outliers start at 4)
MOVE_SCALE_DEG = 20.0      # how much a requested torsion may move per sigma of ring-angle deviation
THETA_CD_STEPS_DEG = (-6.0, -4.0, -2.0, 0.0, 2.0, 4.0, 6.0)   # CB-CG-CD around Engh & Huber's 106.5 (sigma 3.9)
RING_ANGLES_DEG = {"CG-CD-N": (103.2, 1.5), "CA-N-CD": (111.7, 1.4), "C-N-CD": (128.4, 2.1),
                   "CB-CG-CD": (106.5, 3.9)}  # Engh & Huber 2001
_PRO = rc.RESTYPE_INDEX["PRO"]
_CB, _CG, _CD = 4, 5, 6


def _wrap(x):
    return torch.atan2(torch.sin(x), torch.cos(x))


def close_prolines(n, ca, cb, c_prev, has_prev, chi1, chi2):
    """n, ca, cb, c_prev [..., P, 3] Å; has_prev [P] bool (c_prev exists); requested chi1, chi2 [..., P] rad.
    Returns (CG, CD) [..., P, 3] Å."""
    dtype = n.dtype
    ideal = torch.as_tensor(rg.RESTYPE_IDEAL[_PRO], dtype=torch.float64)
    theta_cg = bond_angle(ideal[1], ideal[_CB], ideal[_CG]).to(dtype)
    theta_cd = torch.deg2rad(RING_ANGLES_DEG["CB-CG-CD"][0] + torch.tensor(THETA_CD_STEPS_DEG, dtype=dtype,
                                                                           device=n.device))   # [T]
    b_cg, b_cd = (torch.tensor(rc.bond_length("PRO", a), dtype=dtype, device=n.device) for a in ("CG", "CD"))
    length = rc.RING_CLOSING_BONDS["PRO"][0][2]
    grid = torch.deg2rad(torch.arange(-CHI1_RANGE_DEG, CHI1_RANGE_DEG + 0.5, 1.0, dtype=dtype, device=n.device))
    e = lambda t: t[..., None, :]   # noqa: E731  [..., P, 1, 3]
    cg = place_atom_angles(e(n), e(ca), e(cb), b_cg, theta_cg, grid)[..., None, :]    # [..., P, G, 1, 3]
    e = lambda t: t[..., None, None, :]   # noqa: E731  [..., P, 1, 1, 3]
    # CD = CG + b (-cos t u + sin t (cos chi2 v + sin chi2 w)): |CD - N|^2 = A + R cos(chi2 - phi)
    u = F.normalize(cg - e(cb), dim=-1)
    w = F.normalize(torch.cross(e(cb) - e(ca), u, dim=-1), dim=-1)
    v = torch.cross(w, u, dim=-1)
    q = cg - b_cd * torch.cos(theta_cd)[:, None] * u - e(n)                          # [..., P, G, T, 3]
    qv, qw = (q * v).sum(-1), (q * w).sum(-1)
    radius = b_cd * torch.sin(theta_cd)                                               # [T]
    a = (q * q).sum(-1) + radius ** 2
    r = 2 * radius * torch.sqrt(qv ** 2 + qw ** 2)
    ratio = ((length ** 2 - a) / r).clamp(-1.0, 1.0)
    gap = (torch.sqrt((a + r * ratio).clamp(min=0)) - length).abs()                  # 0 where the ring closes
    phi, delta = torch.atan2(qw, qv), torch.acos(ratio)
    chi2_c = torch.stack([phi + delta, phi - delta], -1)                              # [..., P, G, T, 2]
    cd = (cg[..., None, :] - b_cd * torch.cos(theta_cd)[:, None, None] * u[..., None, :]
          + radius[:, None, None] * (torch.cos(chi2_c)[..., None] * v[..., None, :]
                                     + torch.sin(chi2_c)[..., None] * w[..., None, :]))  # [..., P, G, T, 2, 3]
    cgx = cg[..., None, :].expand_as(cd)
    nx, cax, cpx, cbx = (t[..., None, None, None, :].expand_as(cd) for t in (n, ca, c_prev, cb))
    cost = torch.zeros_like(gap[..., None].expand_as(chi2_c))
    triples = {"CG-CD-N": (cgx, cd, nx), "CA-N-CD": (cax, nx, cd), "C-N-CD": (cpx, nx, cd), "CB-CG-CD": (cbx, cgx, cd)}
    for name, (p, vtx, q_) in triples.items():
        mean, sigma = (math.radians(x) for x in RING_ANGLES_DEG[name])
        z = (bond_angle(p, vtx, q_) - mean).abs() / sigma
        dev = z ** 2 + 100.0 * torch.relu(z - OUTLIER_GUARD_SIGMA) ** 2   # steep beyond the guard: no outliers
        cost = cost + (dev * has_prev[:, None, None, None] if name == "C-N-CD" else dev)
    # the peptide before a proline is planar with CD too: CD near the plane of (C_i-1, N, CA)
    normal = F.normalize(torch.cross(cpx - nx, cax - nx, dim=-1), dim=-1)
    cost = cost + (((cd - nx) * normal).sum(-1) / N_PLANE_SCALE) ** 2 * has_prev[:, None, None, None]
    scale = math.radians(MOVE_SCALE_DEG)
    move = (_wrap(grid[:, None, None] - chi1[..., None, None, None]) ** 2
            + _wrap(chi2_c - chi2[..., None, None, None]) ** 2) / scale ** 2
    cost = cost + move + 1e6 * gap[..., None]
    best = cost.flatten(-3).argmin(-1)                                                # [..., P]
    pick = lambda t: torch.gather(t.flatten(-4, -2), -2,  # noqa: E731
                                  best[..., None, None].expand(*best.shape, 1, 3))[..., 0, :]
    return pick(cgx), pick(cd)
