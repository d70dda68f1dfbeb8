"""Optional clash relief after decoding: a few gradient steps on the side-chain torsions chi1..chi4 against the clash
hinge, restrained to the decoded values. A chi turns its whole torsion group (``RESTYPE_TORSION_GROUP``: VAL CG1 and
CG2 together, PHE CD1 and CD2 ...), so branch points, chirality and rings stay intact; prolines (a closed ring), the
backbone, CB and the CA trace are never moved."""
from __future__ import annotations

import copy

import torch

from latcpb.geometry import residue_constants as rc
from latcpb.geometry.internal_coords import internal_to_cartesian
from latcpb.model.cg_features import radius_graph
from latcpb.model.losses import clash_loss

RELIEF_CA_CUTOFF = 15.0  # Å: residue pairs further apart (CA-CA) cannot touch
RELIEF_MARGIN = 3.0      # Å: residue pairs whose side chains come closer than the hinge + this take part
CONTACT_CHUNK = 16384    # residue pairs per distance block ([16384, 15, 15] floats, 15 MB)


def relieve_clashes(ca, lt, internals, ctx, steps=10, lr=0.2, clash_distance=3.0, restraint=1.0,
                    ca_cutoff=RELIEF_CA_CUTOFF):
    """Decoded internals -> (cos_theta, sin_theta, cos_tau, sin_tau, theta) with side-chain torsions adjusted.

    ca [R, 3] Å; internals from ``Decoder``; ctx: ``CGContext`` of the same packed system. Deterministic. Residue
    pairs up to ``ca_cutoff`` Å apart (CA-CA) are checked: two long side chains (ARG, LYS, TRP) meet at ~14 Å.
    Loss: clash hinge (per residue) + restraint * mean over chi of (1 - cos(delta chi)).
    """
    cos_t, sin_t, cos_tau, sin_tau, theta = internals
    with torch.inference_mode(False), torch.enable_grad():
        lt = _plain_copy(lt)   # tensors made under inference_mode cannot take part in autograd
        last = ctx.last.clone()
        ca_, cos_t_, sin_t_ = ca.clone(), cos_t.clone(), sin_t.clone()
        tau0 = torch.atan2(sin_tau.clone(), cos_tau.clone())
        bond = lt.bond_lengths.to(ca_.dtype)
        src, dst = _contacts(ca_, lt, internal_to_cartesian(ca_[None], lt, bond, cos_t_[None], sin_t_[None],
                                                             torch.cos(tau0)[None], torch.sin(tau0)[None])[0],
                             ctx.packing, ca_cutoff, clash_distance + RELIEF_MARGIN)
        if src.numel() == 0:
            return internals
        group = torch.as_tensor(rc.RESTYPE_TORSION_GROUP, device=tau0.device)[lt.restype]      # [R, 15]
        group = torch.where((lt.restype == rc.RESTYPE_INDEX["PRO"])[:, None], -1, group)
        movable = (group >= 0).to(tau0.dtype)
        group = group.clamp(min=0)
        delta = torch.zeros(len(tau0), 4, dtype=tau0.dtype, device=tau0.device, requires_grad=True)  # [R, 4] rad
        opt = torch.optim.Adam([delta], lr=lr)
        everyone = torch.ones(len(ca_), dtype=torch.bool, device=ca.device)
        turn = lambda: torch.gather(delta, 1, group) * movable  # noqa: E731  [R, 15] rad
        for _ in range(steps):
            tau = tau0 + turn()
            xyz = internal_to_cartesian(ca_[None], lt, bond, cos_t_[None], sin_t_[None], torch.cos(tau)[None],
                                        torch.sin(tau)[None])[0]
            loss = clash_loss(xyz, lt, src, dst, last, everyone, clash_distance, ca_cutoff) \
                + restraint * (1 - torch.cos(turn())).mean()
            opt.zero_grad()
            loss.backward()
            opt.step()
        tau = (tau0 + turn()).detach()
    return cos_t, sin_t, torch.cos(tau), torch.sin(tau), theta


def _contacts(ca, lt, xyz, packing, ca_cutoff, distance):
    """Residue pairs (src > dst) [E] with CA-CA < ``ca_cutoff`` Å where a side-chain atom (beyond CB) of one comes
    closer than ``distance`` Å to any atom of the other in ``xyz`` [R, 15, 3] Å: the only pairs relief can change."""
    src, dst, _ = radius_graph(ca, packing, ca_cutoff)
    # a pair can only touch if its CA-CA distance is below the two residues' reaches (farthest atom from CA) + distance
    reach = (torch.linalg.norm(xyz - ca[:, None], dim=-1) * lt.atom_mask).amax(-1)         # [R] Å
    keep = (src > dst) & (torch.linalg.norm(ca[src] - ca[dst], dim=-1) < reach[src] + reach[dst] + distance)
    src, dst = src[keep], dst[keep]
    if src.numel() == 0:
        return src, dst
    side = torch.zeros(rc.ATOMS_PER_RESIDUE, dtype=torch.bool, device=ca.device)
    side[5:rc.OXT_SLOT] = True
    near = torch.zeros(len(src), dtype=torch.bool, device=ca.device)
    for k in range(0, len(src), CONTACT_CHUNK):                       # bounded memory on large packed systems
        a, b = src[k:k + CONTACT_CHUNK], dst[k:k + CONTACT_CHUNK]
        pair = lt.atom_mask[a][:, :, None] & lt.atom_mask[b][:, None, :] & (side[None, :, None] | side[None, None, :])
        d = torch.cdist(xyz[a], xyz[b], compute_mode="donot_use_mm_for_euclid_dist")     # [e, 15, 15]
        near[k:k + CONTACT_CHUNK] = d.masked_fill(~pair, float("inf")).flatten(1).min(1).values < distance
    return src[near], dst[near]


def relieve_built_clashes(xyz, lt, segment, steps=10, lr=0.2, clash_distance=3.0, restraint=1.0,
                          ca_cutoff=RELIEF_CA_CUTOFF):
    """Clash relief on a structure of the structure builder: xyz [R, 15, 3] Å (packed, segments ``segment`` [R]) ->
    the same with chi1..chi4 turned by a few gradient steps against the clash hinge (restrained to the given chi).
    The side chains are re-placed from their rigid groups (``sidechain.place_side_chains``), so every bond length,
    angle, ring and planar group stays ideal; prolines, the backbone and CB never move. Deterministic."""
    from latcpb.geometry.sidechain import place_side_chains
    from latcpb.geometry.structure import chi_torsions
    from latcpb.model.cg_features import Packing, chain_ends

    with torch.inference_mode(False), torch.enable_grad():
        lt = _plain_copy(lt)
        xyz, segment = xyz.clone(), segment.clone()
        ca = xyz[:, 1]
        src, dst = _contacts(ca, lt, xyz, Packing(segment), ca_cutoff, clash_distance + RELIEF_MARGIN)
        if src.numel() == 0:
            return xyz
        chi0 = chi_torsions(xyz[None], lt)[0]
        chi0 = torch.atan2(chi0[..., 1], chi0[..., 0])                                   # [R, 4] rad
        pro = lt.restype == rc.RESTYPE_INDEX["PRO"]
        movable = (torch.as_tensor(rc.RESTYPE_CHI_MASK, device=xyz.device)[lt.restype] & ~pro[:, None]).to(xyz.dtype)
        delta = torch.zeros_like(chi0, requires_grad=True)
        opt = torch.optim.Adam([delta], lr=lr)
        last = chain_ends(lt)[1]
        everyone = torch.ones(len(ca), dtype=torch.bool, device=xyz.device)

        def placed():
            chi = chi0 + delta * movable
            out = place_side_chains(xyz, lt.restype, torch.stack([torch.cos(chi), torch.sin(chi)], -1))
            return torch.where(pro[:, None, None], xyz, out)

        for _ in range(steps):
            loss = clash_loss(placed(), lt, src, dst, last, everyone, clash_distance, ca_cutoff) \
                + restraint * (1 - torch.cos(delta * movable)).mean()
            opt.zero_grad()
            loss.backward()
            opt.step()
        with torch.no_grad():
            return placed()


def _plain_copy(lt):
    """A copy of LayoutTensors whose tensors can take part in autograd (tensors made under inference_mode cannot)."""
    lt = copy.copy(lt)
    for name, value in vars(lt).items():
        if torch.is_tensor(value):
            setattr(lt, name, value.clone())
        elif isinstance(value, (list, tuple)) and value and all(torch.is_tensor(v) for v in value):
            setattr(lt, name, type(value)(v.clone() for v in value))
    return lt
