"""Optional clash relief after decoding: a few gradient steps on the side-chain torsions (slots beyond CB) against the
clash hinge, restrained to the decoded values. Backbone, CB (chirality) and the CA trace are never moved."""
from __future__ import annotations

import copy

import torch

from latcpb.geometry import residue_constants as rc
from latcpb.geometry.internal_coords import internal_to_cartesian
from latcpb.model.losses import clash_loss

FIRST_SIDE_CHAIN_SLOT = 5


def relieve_clashes(ca, lt, internals, ctx, steps=10, lr=0.15, clash_distance=3.0, restraint=1.0):
    """Decoded internals -> (cos_theta, sin_theta, cos_tau, sin_tau, theta) with side-chain torsions adjusted.

    ca [R, 3] Å; internals from ``Decoder``; ctx: ``CGContext`` of the same packed system. Deterministic.
    Loss: clash hinge (per residue) + restraint * mean(1 - cos(delta tau)).
    """
    cos_t, sin_t, cos_tau, sin_tau, theta = internals
    with torch.inference_mode(False), torch.enable_grad():
        # tensors made under inference_mode cannot take part in autograd: work on normal copies
        lt = copy.copy(lt)
        for name, value in vars(lt).items():
            if torch.is_tensor(value):
                setattr(lt, name, value.clone())
            elif isinstance(value, (list, tuple)) and value and all(torch.is_tensor(v) for v in value):
                setattr(lt, name, type(value)(v.clone() for v in value))
        src, dst, last = ctx.src.clone(), ctx.dst.clone(), ctx.last.clone()
        ca_, cos_t_, sin_t_ = ca.clone(), cos_t.clone(), sin_t.clone()
        tau0 = torch.atan2(sin_tau.clone(), cos_tau.clone())
        movable = torch.zeros(rc.ATOMS_PER_RESIDUE, dtype=tau0.dtype, device=tau0.device)
        movable[FIRST_SIDE_CHAIN_SLOT:rc.OXT_SLOT] = 1.0
        delta = torch.zeros_like(tau0, requires_grad=True)
        opt = torch.optim.Adam([delta], lr=lr)
        everyone = torch.ones(len(ca_), dtype=torch.bool, device=ca.device)
        bond = lt.bond_lengths.to(ca_.dtype)
        for _ in range(steps):
            tau = tau0 + delta * movable
            xyz = internal_to_cartesian(ca_[None], lt, bond, cos_t_[None], sin_t_[None], torch.cos(tau)[None],
                                        torch.sin(tau)[None])[0]
            loss = clash_loss(xyz, lt, src, dst, last, everyone, clash_distance) \
                + restraint * (1 - torch.cos(delta * movable)).mean()
            opt.zero_grad()
            loss.backward()
            opt.step()
        tau = (tau0 + delta * movable).detach()
    return cos_t, sin_t, torch.cos(tau), torch.sin(tau), theta
