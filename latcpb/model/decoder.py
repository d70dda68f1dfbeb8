"""Decoder D(z, CG features): residue network -> bond angle and torsion of every slot -> NeRF coordinates.

Bond lengths come from the Engh & Huber table (``LayoutTensors.bond_lengths``); theta is a bounded offset around
a typical value per residue type and slot (measured on the training data); tau is a unit (cos, sin) vector. With
``rigid_rings`` the aromatic rings are rigid: their angles and torsions beyond CG come from the fitted ideal geometry
(``geometric.aromatic_ring_tables``) and only chi1, chi2 are predicted, so the rings are planar and close.
"""
from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import nn

from latcpb.geometry import residue_constants as rc
from latcpb.geometry.internal_coords import internal_to_cartesian
from latcpb.model.encoders import LocalTransformer, mlp
from latcpb.model.geometric import aromatic_ring_tables

S = rc.ATOMS_PER_RESIDUE


class Decoder(nn.Module):
    """z [R, D] + h_cg [R, width] -> internal coordinates [R, 15] (cos/sin theta, cos/sin tau)."""

    def __init__(self, latent_dim, width=128, layers=2, heads=4, theta_range=0.35, rigid_rings=True):
        super().__init__()
        self.theta_range = theta_range
        self.rigid_rings = rigid_rings
        self.register_buffer("theta0", torch.full((rc.N_RESTYPES, S), 2 * math.pi / 3))  # [20, 15] rad
        if rigid_rings:  # derived from the shipped geometry table, not stored in checkpoints
            for key, value in aromatic_ring_tables().items():
                self.register_buffer(f"ring_{key}", torch.as_tensor(value), persistent=False)
        self.inp = nn.Linear(latent_dim, width)
        self.mix = mlp(2 * width, width, width)
        self.transformer = LocalTransformer(width, layers, heads)
        self.head = mlp(width, 2 * width, 3 * S)

    def forward(self, z, h_cg, ctx):
        """Returns (cos_theta, sin_theta, cos_tau, sin_tau, theta) each [R, 15]."""
        h = h_cg + self.mix(torch.cat([self.inp(z), h_cg], -1))
        p = ctx.packing
        h = p.unpad(self.transformer(p.pad(h), ctx.within))
        out = self.head(h).view(-1, S, 3)
        theta = self.theta0[ctx.lt.restype] + self.theta_range * torch.tanh(out[..., 0])
        tau = F.normalize(out[..., 1:3] + torch.tensor([1e-4, 0.0], device=z.device, dtype=z.dtype), dim=-1)
        if self.rigid_rings:
            theta, tau = self._rigid_rings(theta, tau, ctx.lt.restype)
        return torch.cos(theta), torch.sin(theta), tau[..., 0], tau[..., 1], theta

    def _rigid_rings(self, theta, tau, restype):
        """Ideal ring angles and torsions: theta [R, 15] rad, tau [R, 15, 2] unit vectors -> the same, rings set."""
        ring = self.ring_ring[restype]
        theta = torch.where(ring, self.ring_theta[restype].to(theta.dtype), theta)
        angle = torch.atan2(tau[..., 1], tau[..., 0])
        value = self.ring_value[restype].to(angle.dtype)
        sibling = torch.gather(angle, -1, self.ring_sibling[restype])
        angle = torch.where(self.ring_fixed[restype], value,
                            torch.where(self.ring_offset[restype], sibling + value, angle))
        ring_tau = torch.stack([torch.cos(angle), torch.sin(angle)], -1)
        return theta, torch.where(ring[..., None], ring_tau, tau)


def build_coordinates(ca, lt, internals):
    """NeRF on a packed system (F = 1): ca [R, 3] Å, internals from ``Decoder`` -> xyz [R, 15, 3] Å."""
    cos_t, sin_t, cos_tau, sin_tau, _ = internals
    xyz = internal_to_cartesian(ca[None], lt, lt.bond_lengths.to(ca.dtype), cos_t[None], sin_t[None],
                                cos_tau[None], sin_tau[None])
    return xyz[0]


CHI_BINS = 36   # 10-degree chi bins


class DofDecoder(nn.Module):
    """z [R, D] + h_cg [R, width] -> the structure builder's degrees of freedom (``model.decoder_dofs``).

    Peptide rotation about CA_i-CA_i+1 and the three chain-end torsions as unit 2-vectors; chi1-chi4 as one of
    ``CHI_BINS`` bins (logits) plus an offset inside the chosen bin (tanh, at most half a bin), so a structure sits in
    one rotamer well and several samples can draw the wells' populations. ``forward`` returns a dict:
    peptide [R, 2], ends [R, 3, 2] (unit), chi_logits [R, 4, K], chi_offset [R, 4, K] rad.
    """

    def __init__(self, latent_dim, width=128, layers=2, heads=4, bins=CHI_BINS):
        super().__init__()
        self.bins = bins
        self.inp = nn.Linear(latent_dim, width)
        self.mix = mlp(2 * width, width, width)
        self.transformer = LocalTransformer(width, layers, heads)
        self.head = mlp(width, 2 * width, 2 + 6 + 8 * bins)

    def forward(self, z, h_cg, ctx):
        h = h_cg + self.mix(torch.cat([self.inp(z), h_cg], -1))
        p = ctx.packing
        h = p.unpad(self.transformer(p.pad(h), ctx.within))
        out = self.head(h)
        k = self.bins
        unit = lambda v: F.normalize(v + torch.tensor([1e-4, 0.0], device=v.device, dtype=v.dtype), dim=-1)  # noqa
        half = math.pi / k
        return {"peptide": unit(out[:, :2]), "ends": unit(out[:, 2:8].view(-1, 3, 2)),
                "chi_logits": out[:, 8:8 + 4 * k].view(-1, 4, k),
                "chi_offset": half * torch.tanh(out[:, 8 + 4 * k:].view(-1, 4, k))}

    def bin_centres(self, like):
        """[K] rad: centres of the chi bins in (-pi, pi)."""
        k = self.bins
        return (torch.arange(k, device=like.device, dtype=like.dtype) + 0.5) * (2 * math.pi / k) - math.pi

    def chi_bin(self, chi):
        """Bin index [...] of chi angles [...] rad."""
        return ((chi + math.pi) / (2 * math.pi / self.bins)).floor().long().clamp(0, self.bins - 1)

    def torsions(self, out, temperature=0.0, generator=None, chi_bins=None):
        """``Torsions`` from a forward output: chi in the most likely bin (temperature 0), a bin drawn from the
        softmax at ``temperature``, or the given ``chi_bins`` [R, 4] (teacher forcing), plus its offset."""
        from latcpb.geometry.structure import Torsions

        logits = out["chi_logits"]
        if chi_bins is None and temperature > 0:
            probs = torch.softmax(logits / temperature, -1).reshape(-1, self.bins)
            chi_bins = torch.multinomial(probs, 1, generator=generator).view(logits.shape[:-1])
        elif chi_bins is None:
            chi_bins = logits.argmax(-1)
        offset = torch.gather(out["chi_offset"], -1, chi_bins[..., None])[..., 0]
        chi = self.bin_centres(offset)[chi_bins] + offset
        return Torsions(out["peptide"], torch.stack([torch.cos(chi), torch.sin(chi)], -1), out["ends"])
