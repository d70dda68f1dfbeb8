"""The CG structure encoder E_phi (CA graph) and the all-atom encoder E (atoms -> residue nodes), both e3nn.

Both output per-residue invariant features [R, width]; a transformer over the residue sequence follows, with
attention restricted to residues within ``attn_cutoff`` Å (so it behaves the same on crops and whole chains).
"""
from __future__ import annotations

import torch
from e3nn import o3
from torch import nn

from latcpb.geometry import residue_constants as rc
from latcpb.model.cg_features import CG_FEATURE_DIM, Packing, chain_ends, radius_graph, trace_features
from latcpb.model.equivariant import PointConv


def mlp(n_in, n_hidden, n_out, layers=2):
    mods, d = [], n_in
    for _ in range(layers - 1):
        mods += [nn.Linear(d, n_hidden), nn.SiLU()]
        d = n_hidden
    mods.append(nn.Linear(d, n_out))
    return nn.Sequential(*mods)


class LocalTransformer(nn.Module):
    """Transformer encoder over padded residues [B, L, width] with a spatial attention mask [B, L, L] bool."""

    def __init__(self, width, layers, heads=4, dropout=0.0):
        super().__init__()
        self.heads = heads
        self.layers = nn.ModuleList(
            nn.TransformerEncoderLayer(width, heads, 2 * width, dropout=dropout, batch_first=True, norm_first=True)
            for _ in range(layers))

    def forward(self, x, within):
        eye = torch.eye(x.shape[1], dtype=torch.bool, device=x.device)
        blocked = ~(within | eye)                                   # True = may not attend
        mask = blocked.repeat_interleave(self.heads, dim=0)         # [B * heads, L, L]
        mask = torch.zeros(mask.shape, dtype=x.dtype, device=x.device).masked_fill(mask, float("-inf"))
        for layer in self.layers:
            x = layer(x, src_mask=mask)
        return x


class CGContext:
    """Graph of one packed CA system, computed once and shared by the encoders, decoder and denoiser."""

    def __init__(self, ca, lt, segment, graph_cutoff, attn_cutoff):
        self.ca = ca                                   # [R, 3] Å
        self.lt = lt
        self.packing = Packing(segment)
        self.src, self.dst, _ = radius_graph(ca, self.packing, graph_cutoff)
        if attn_cutoff == graph_cutoff:
            self.within = _
        else:
            self.within = radius_graph(ca, self.packing, attn_cutoff)[2]
        self.first, self.last = chain_ends(lt)


class CGEncoder(nn.Module):
    """E_phi: residue type + invariant CA-trace features -> two e3nn convolutions on the CA graph -> transformer.

    Output h [R, width] invariant features per residue.
    """

    def __init__(self, width=128, conv_width=32, graph_cutoff=10.0, transformer_layers=2, heads=4):
        super().__init__()
        self.embed = nn.Embedding(rc.N_RESTYPES, width)
        self.inp = mlp(width + CG_FEATURE_DIM, width, width)
        self.to_conv = nn.Linear(width, conv_width)
        irr1 = o3.Irreps(f"{conv_width}x0e + {conv_width // 2}x1o + {conv_width // 4}x2e")
        self.conv1 = PointConv(f"{conv_width}x0e", irr1, cutoff=graph_cutoff, n_edge_scalars=0)
        self.conv2 = PointConv(irr1, f"{2 * conv_width}x0e", cutoff=graph_cutoff, n_edge_scalars=0)
        self.n_scalar1 = conv_width
        self.out = mlp(width + 2 * conv_width, width, width)
        self.transformer = LocalTransformer(width, transformer_layers, heads)

    def forward(self, ctx: CGContext):
        ca, lt = ctx.ca, ctx.lt
        h = self.inp(torch.cat([self.embed(lt.restype), trace_features(ca, lt)], -1))
        x = self.to_conv(h)
        r = ca[ctx.src] - ca[ctx.dst]
        n = ca.shape[0]
        x1 = self.conv1(x[ctx.src], r, ctx.dst, n)
        x1 = torch.cat([torch.nn.functional.silu(x1[:, :self.n_scalar1]), x1[:, self.n_scalar1:]], -1)
        x2 = self.conv2(x1[ctx.src], r, ctx.dst, n)
        h = h + self.out(torch.cat([h, x2], -1))
        p = ctx.packing
        return p.unpad(self.transformer(p.pad(h), ctx.within))


class AllAtomEncoder(nn.Module):
    """E: atoms of residues i-1, i, i+1 (same chain, within ``atom_cutoff`` Å of CA_i) -> e3nn convolution into
    residue node i -> invariant readout against the residue's own frame vectors (N-CA, C-CA as l<=2 harmonics and
    their cross product, a pseudovector, so the readout sees chirality) -> MLP with the CG features -> transformer.

    Output [R, width].
    """

    def __init__(self, width=128, atom_width=32, atom_cutoff=8.0, transformer_layers=1, heads=4):
        super().__init__()
        self.atom_cutoff = atom_cutoff
        self.embed = nn.Embedding(rc.N_RESTYPES * rc.ATOMS_PER_RESIDUE, atom_width)
        irr = o3.Irreps(f"{atom_width}x0e + {atom_width // 2}x1o + {atom_width // 2}x2e")
        self.conv = PointConv(f"{atom_width}x0e", irr, cutoff=atom_cutoff, n_edge_scalars=3, avg_neighbours=20.0)
        self.frame_irreps = o3.Irreps("2x0e + 2x1o + 2x2e + 1x1e")
        self.readout = o3.FullyConnectedTensorProduct(irr, self.frame_irreps, o3.Irreps(f"{2 * atom_width}x0e + "
                                                                                          f"{atom_width // 2}x0o"))
        n_read = 2 * atom_width + atom_width // 2
        self.out = mlp(n_read + width, width, width)
        self.transformer = LocalTransformer(width, transformer_layers, heads)

    def forward(self, ctx: CGContext, xyz, present, h_cg):
        """xyz [R, 15, 3] Å; present [R, 15] bool; h_cg [R, width] -> [R, width]."""
        lt, ca = ctx.lt, ctx.ca
        n, s = present.shape
        idx = torch.arange(n, device=ca.device)
        atom_type = lt.restype[:, None] * s + torch.arange(s, device=ca.device)        # [R, 15]
        src_res = torch.stack([idx - 1, idx, idx + 1], 1).clamp(0, n - 1)               # [R, 3]
        res_ok = torch.stack([~ctx.first, torch.ones_like(ctx.first), ~ctx.last], 1)    # [R, 3]
        vec = xyz[src_res] - ca[:, None, None, :]                                       # [R, 3, 15, 3]
        ok = res_ok[:, :, None] & present[src_res] & (torch.linalg.norm(vec, dim=-1) < self.atom_cutoff)
        ok[:, 1, 1] = False                                                             # CA_i itself
        dst, k, slot = torch.nonzero(ok, as_tuple=True)
        src = src_res[dst, k]
        rel = torch.nn.functional.one_hot(k, 3).to(ca.dtype)                           # which neighbour
        x = self.embed(atom_type[src, slot])
        node = self.conv(x, vec[dst, k, slot], dst, n, edge_scalars=rel)
        # frame of residue i from its own backbone atoms (falls back to zero vectors where missing)
        e_n = torch.where(present[:, 0:1], xyz[:, 0] - ca, torch.zeros_like(ca))
        e_c = torch.where(present[:, 2:3], xyz[:, 2] - ca, torch.zeros_like(ca))
        sh = o3.Irreps.spherical_harmonics(2)
        y_n = o3.spherical_harmonics(sh, e_n, normalize=True, normalization="component")
        y_c = o3.spherical_harmonics(sh, e_c, normalize=True, normalization="component")
        cross = torch.linalg.cross(e_n, e_c) / 2.0
        frame = torch.cat([y_n[:, :1], y_c[:, :1], y_n[:, 1:4], y_c[:, 1:4], y_n[:, 4:], y_c[:, 4:], cross], -1)
        inv = self.readout(node, frame)
        h = h_cg + self.out(torch.cat([inv, h_cg], -1))
        p = ctx.packing
        return p.unpad(self.transformer(p.pad(h), ctx.within))
