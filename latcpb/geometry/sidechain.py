"""Side chains from chi1-chi4: torsions -> frames -> atoms (batched, differentiable torch functions).

Each chi k turns a rigid group (``rigid_groups``): its frame is the NeRF frame of the first three chi atoms turned
about x by chi k, and its atoms sit at the group's literature positions in that frame. Groups are placed in chi
order, so every bond length, bond angle, branch point, ring and planar group beyond CB is ideal whatever the chi.
Proline's ring closes by its own solver (``proline.close_prolines``) instead.
"""
from __future__ import annotations

import torch
import torch.nn.functional as F

from latcpb.geometry import rigid_groups as rg
from latcpb.geometry.rigid import apply_frame, frame_from_points, rotation_x


def _slots(xyz, index):
    """xyz [..., N, 15, 3], index [N, K] -> [..., N, K, 3]."""
    idx = index.expand(*xyz.shape[:-3], *index.shape)[..., None].expand(*xyz.shape[:-3], *index.shape, 3)
    return torch.gather(xyz, -2, idx)


def place_side_chains(xyz, restype, chi):
    """xyz [..., N, 15, 3] Å with N, CA, C, CB placed; chi (cos, sin) [..., N, 4, 2] -> xyz with every side-chain
    atom beyond CB placed (other slots unchanged)."""
    device, dtype = xyz.device, xyz.dtype
    group = torch.as_tensor(rg.RESTYPE_GROUP, device=device)[restype]                      # [N, 15]
    local = torch.as_tensor(rg.RESTYPE_GROUP_POSITIONS, device=device, dtype=dtype)[restype]  # [N, 15, 3]
    frame_slots = torch.as_tensor(rg.RESTYPE_CHI_FRAME, device=device)[restype]            # [N, 4, 3]
    chi = F.normalize(chi, dim=-1, eps=1e-8)
    for k in range(4):
        if not bool((group == k).any()):
            break
        a, b, c = _slots(xyz, frame_slots[:, k]).unbind(-2)                                # [..., N, 3]
        rot, origin = frame_from_points(a, b, c)
        rot = rot @ rotation_x(chi[..., k, 0], chi[..., k, 1])
        placed = apply_frame(rot, origin, local)                                          # [..., N, 15, 3]
        xyz = torch.where((group == k)[..., None], placed, xyz)
    return xyz


def fit_side_chains(xyz, restype, target, present=None):
    """Like ``place_side_chains``, with each chi chosen to overlay its group's atoms on ``target`` [..., N, 15, 3] Å
    (least squares about the chi axis, group by group in chi order) instead of given: the side chain nearest to a
    structure's whose own geometry is not ideal. ``present`` [N, 15] bool: target atoms to use (default all).
    Returns (xyz, chi (cos, sin) [..., N, 4, 2])."""
    device, dtype = xyz.device, xyz.dtype
    group = torch.as_tensor(rg.RESTYPE_GROUP, device=device)[restype]
    local = torch.as_tensor(rg.RESTYPE_GROUP_POSITIONS, device=device, dtype=dtype)[restype]
    frame_slots = torch.as_tensor(rg.RESTYPE_CHI_FRAME, device=device)[restype]
    use = torch.ones_like(group, dtype=torch.bool) if present is None else present
    chis = torch.zeros(*xyz.shape[:-2], 4, 2, dtype=dtype, device=device)
    chis[..., 0] = 1.0
    for k in range(4):
        members = group == k
        if not bool(members.any()):
            break
        a, b, c = _slots(xyz, frame_slots[:, k]).unbind(-2)
        rot, origin = frame_from_points(a, b, c)
        q = torch.einsum("...ji,...kj->...ki", rot, target - origin[..., None, :])          # target in the frame
        w = (members & use).to(dtype)                                                    # [N, 15]
        cy = ((local[..., 1] * q[..., 1] + local[..., 2] * q[..., 2]) * w).sum(-1)
        cz = ((local[..., 1] * q[..., 2] - local[..., 2] * q[..., 1]) * w).sum(-1)
        chi = F.normalize(torch.stack([cy, cz], -1) + torch.tensor([1e-9, 0.0], dtype=dtype, device=device), dim=-1)
        chis[..., k, :] = chi
        placed = apply_frame(rot @ rotation_x(chi[..., 0], chi[..., 1]), origin, local)
        xyz = torch.where(members[..., None], placed, xyz)
    return xyz, chis
