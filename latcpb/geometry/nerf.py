"""Pure, batched, differentiable geometry: NeRF placement, bond angles and torsions (torch, any float dtype).

Every function broadcasts over leading dimensions; coordinates are ``[..., 3]`` in Å, angles in radians.
"""
from __future__ import annotations

import torch
import torch.nn.functional as F

_EPS = 1e-8


def place_atom(a, b, c, bond, cos_angle, sin_angle, cos_torsion, sin_torsion):
    """Position of atom d given parents a, b, c (Natural Extension Reference Frame).

    a, b, c: [..., 3] Å; bond = |c - d| [...] Å; angle = angle(b, c, d); torsion = dihedral(a, b, c, d).
    Returns d [..., 3] Å.
    """
    bc = F.normalize(c - b, dim=-1, eps=_EPS)
    normal = F.normalize(torch.cross(b - a, bc, dim=-1), dim=-1, eps=_EPS)
    in_plane = torch.cross(normal, bc, dim=-1)
    local_x = -bond * cos_angle
    local_y = bond * sin_angle * cos_torsion
    local_z = bond * sin_angle * sin_torsion
    return c + local_x[..., None] * bc + local_y[..., None] * in_plane + local_z[..., None] * normal


def place_atom_angles(a, b, c, bond, angle, torsion):
    """``place_atom`` with the bond angle and torsion given in radians."""
    return place_atom(a, b, c, bond, torch.cos(angle), torch.sin(angle), torch.cos(torsion), torch.sin(torsion))


def bond_angle(a, b, c):
    """Angle a-b-c in radians, [...]."""
    u = F.normalize(a - b, dim=-1, eps=_EPS)
    v = F.normalize(c - b, dim=-1, eps=_EPS)
    cos = (u * v).sum(-1)
    sin = torch.linalg.norm(torch.cross(u, v, dim=-1), dim=-1)
    return torch.atan2(sin, cos)


def dihedral(a, b, c, d):
    """Torsion a-b-c-d in radians in (-pi, pi], IUPAC sign convention, [...]."""
    b0 = a - b
    b1 = F.normalize(c - b, dim=-1, eps=_EPS)
    b2 = d - c
    v = b0 - (b0 * b1).sum(-1, keepdim=True) * b1
    w = b2 - (b2 * b1).sum(-1, keepdim=True) * b1
    x = (v * w).sum(-1)
    y = (torch.cross(b1, v, dim=-1) * w).sum(-1)
    return torch.atan2(y, x)


def virtual_neighbour(b, c):
    """A point 1 Å from b, perpendicular to the b-c axis, chosen deterministically: [..., 3] Å.

    Used as the missing reference of two-residue chains, whose orientation about the CA-CA axis is
    not determined by the CA trace.
    """
    axis = F.normalize(b - c, dim=-1, eps=_EPS)
    helper = torch.zeros_like(axis)
    use_y = axis[..., 0].abs() > 0.9
    helper[..., 0] = (~use_y).to(axis.dtype)
    helper[..., 1] = use_y.to(axis.dtype)
    return b + F.normalize(torch.cross(axis, helper, dim=-1), dim=-1, eps=_EPS)
