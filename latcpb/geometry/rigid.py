"""Rigid frames (rotation + origin) for the structure builder: pure, batched, differentiable torch functions.

A frame is a rotation ``R`` [..., 3, 3] whose columns are the frame's axes, and an origin ``t`` [..., 3] Å; a local
point ``p`` maps to ``t + R p``. The frame of three atoms (a, b, c) is the NeRF frame of ``nerf.place_atom``:
origin c, x along b -> c, y in the plane of a, b, c (on the side of a), so that an atom at distance d from c, bond
angle theta (b-c-atom) and torsion tau (a-b-c-atom) has local coordinates (-d cos theta, d sin theta cos tau,
d sin theta sin tau).
"""
from __future__ import annotations

import torch
import torch.nn.functional as F

_EPS = 1e-8


def frame_from_points(a, b, c):
    """NeRF frame of atoms (a, b, c) [..., 3] Å -> (R [..., 3, 3], origin c [..., 3])."""
    x = F.normalize(c - b, dim=-1, eps=_EPS)
    z = F.normalize(torch.cross(b - a, x, dim=-1), dim=-1, eps=_EPS)
    y = torch.cross(z, x, dim=-1)
    return torch.stack([x, y, z], dim=-1), c


def local_coordinates(rotation, origin, points):
    """Points [..., 3] Å in the frame (R [..., 3, 3], origin [..., 3]) -> local coordinates [..., 3] Å."""
    return torch.einsum("...ji,...j->...i", rotation, points - origin)


def rotation_x(cos, sin):
    """Rotation about the local x axis by the angle (cos, sin) [...] -> [..., 3, 3]."""
    one, zero = torch.ones_like(cos), torch.zeros_like(cos)
    rows = [torch.stack([one, zero, zero], -1), torch.stack([zero, cos, -sin], -1), torch.stack([zero, sin, cos], -1)]
    return torch.stack(rows, dim=-2)


def apply_frame(rotation, origin, local):
    """Local points [..., K, 3] Å in the frame (R [..., 3, 3], origin [..., 3]) -> global points [..., K, 3] Å."""
    return origin[..., None, :] + torch.einsum("...ij,...kj->...ki", rotation, local)
