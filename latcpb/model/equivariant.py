"""e3nn building blocks: a point convolution with per-edge radial weights (depthwise 'uvu' tensor product)."""
from __future__ import annotations

import torch
from e3nn import o3
from e3nn.math import soft_one_hot_linspace
from e3nn.nn import FullyConnectedNet
from torch import nn


class PointConv(nn.Module):
    """Equivariant message passing: m_e = TP(x_src, Y(r_e); w(|r_e|, s_e)), summed at dst, then o3.Linear.

    x_src [E, irreps_in] (already gathered), r [E, 3] Å (dst -> src vector is irrelevant: any edge vector
    that rotates with the input), edge_scalars [E, n_edge_scalars]. Output [n_dst, irreps_out].
    """

    def __init__(self, irreps_in, irreps_out, lmax=2, cutoff=10.0, n_basis=12, n_edge_scalars=0, hidden=32,
                 avg_neighbours=16.0):
        super().__init__()
        self.irreps_in = o3.Irreps(irreps_in)
        self.irreps_out = o3.Irreps(irreps_out)
        self.irreps_sh = o3.Irreps.spherical_harmonics(lmax)
        self.cutoff = cutoff
        self.n_basis = n_basis
        self.norm = avg_neighbours ** 0.5
        mid, instructions = [], []
        for i, (mul, ir_in) in enumerate(self.irreps_in):
            for j, (_, ir_sh) in enumerate(self.irreps_sh):
                for ir_out in ir_in * ir_sh:
                    if ir_out in self.irreps_out:
                        instructions.append((i, j, len(mid), "uvu", True))
                        mid.append((mul, ir_out))
        self.irreps_mid = o3.Irreps(mid)
        self.tp = o3.TensorProduct(self.irreps_in, self.irreps_sh, self.irreps_mid, instructions,
                                   shared_weights=False, internal_weights=False)
        self.radial = FullyConnectedNet([n_basis + n_edge_scalars, hidden, self.tp.weight_numel], torch.nn.functional.silu)
        self.linear = o3.Linear(self.irreps_mid, self.irreps_out)
        # scalar inputs: the tensor product is an outer product c_l * w_ul * x_u * Y_lm; c_l measured once from e3nn
        self.scalar_input = len(self.irreps_in) == 1 and self.irreps_in[0].ir == o3.Irrep("0e")
        if self.scalar_input:
            self.register_buffer("path_constant", self._path_constants(), persistent=False)

    @torch.no_grad()
    def _path_constants(self):
        """c_l [n_paths] such that tp(x, Y, w) == c_l * w * x * Y for scalar x (checked in the tests)."""
        mul = self.irreps_in[0].mul
        x = torch.ones(1, mul)
        consts = []
        for k, (_, ir) in enumerate(self.irreps_mid):
            sh = torch.zeros(1, self.irreps_sh.dim)
            sl = self.irreps_sh.slices()[[ir_sh.ir for ir_sh in self.irreps_sh].index(ir)]
            sh[0, sl.start] = 1.0
            w = torch.zeros(1, self.tp.weight_numel)
            w[0, k * mul] = 1.0
            out = self.tp(x, sh, w)[0, self.irreps_mid.slices()[k]]
            consts.append(out[0])
        return torch.stack(consts)

    def _scalar_tp(self, x, sh, w):
        """Fast path of ``self.tp`` for scalar inputs x [E, u]: [E, irreps_mid]."""
        mul = self.irreps_in[0].mul
        parts = []
        for k, (_, ir) in enumerate(self.irreps_mid):
            sl = self.irreps_sh.slices()[[ir_sh.ir for ir_sh in self.irreps_sh].index(ir)]
            a = self.path_constant[k] * w[:, k * mul:(k + 1) * mul] * x                  # [E, u]
            parts.append((a[:, :, None] * sh[:, None, sl]).reshape(x.shape[0], -1))     # [E, u * (2l + 1)]
        return torch.cat(parts, -1)

    def forward(self, x_src, r, dst, n_dst, edge_scalars=None):
        length = torch.linalg.norm(r, dim=-1)
        sh = o3.spherical_harmonics(self.irreps_sh, r, normalize=True, normalization="component")
        basis = soft_one_hot_linspace(length, 0.0, self.cutoff, self.n_basis, basis="smooth_finite", cutoff=True)
        basis = basis * self.n_basis ** 0.5
        if edge_scalars is not None:
            basis = torch.cat([basis, edge_scalars], dim=-1)
        weights = self.radial(basis)
        msg = self._scalar_tp(x_src, sh, weights) if self.scalar_input else self.tp(x_src, sh, weights)
        out = msg.new_zeros(n_dst, msg.shape[-1]).index_add_(0, dst, msg) / self.norm
        return self.linear(out)
