"""Discrete latent (Eq. 9), learnable multimodal prior (Eq. 10), and the latent losses L_M (Eq. 11), L_C (Eq. 14),
L_K (posterior vs the CG-conditioned prior). Latents z are per residue [R, D]."""
from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn


def gaussian_kl(mu_q, logvar_q, mu_p, logvar_p):
    """KL(N(mu_q, e^logvar_q) || N(mu_p, e^logvar_p)) summed over the last dim: [...]."""
    return 0.5 * (logvar_p - logvar_q + (logvar_q.exp() + (mu_q - mu_p) ** 2) / logvar_p.exp() - 1.0).sum(-1)


class DiscreteLatent(nn.Module):
    """Head -> K category probabilities (sigmoid, normalised); y = one_hot(Multinomial(p, 1)), straight-through."""

    def __init__(self, width, n_codes):
        super().__init__()
        self.head = nn.Linear(width, n_codes)

    def forward(self, h, sample=True, generator=None):
        """h [R, width] -> (y [R, K] straight-through one-hot, p [R, K])."""
        p = torch.sigmoid(self.head(h))
        p = p / p.sum(-1, keepdim=True).clamp(min=1e-8)
        if sample:
            index = torch.multinomial(p.detach(), 1, generator=generator)[:, 0]
        else:
            index = p.argmax(-1)
        y = F.one_hot(index, p.shape[-1]).to(p.dtype)
        return y + p - p.detach(), p


class MultimodalPrior(nn.Module):
    """K learnable code embeddings e_k; one shared network maps each to N(mu_k, diag sigma_k^2) in R^D."""

    def __init__(self, n_codes, code_dim, latent_dim, hidden=64):
        super().__init__()
        self.codes = nn.Parameter(torch.randn(n_codes, code_dim))
        self.net = nn.Sequential(nn.Linear(code_dim, hidden), nn.SiLU(), nn.Linear(hidden, 2 * latent_dim))

    def components(self):
        """(mu [K, D], logvar [K, D]); logvar softly bounded to (-6, 2)."""
        mu, logvar = self.net(self.codes).chunk(2, -1)
        return mu, -6.0 + 8.0 * torch.sigmoid(logvar)

    def selected(self, y):
        """Gaussian of the active code(s): y [R, K] -> (mu [R, D], logvar [R, D]), mixed by y (Eq. 10 with one code)."""
        mu, logvar = self.components()
        w = y / y.sum(-1, keepdim=True).detach().clamp(min=1e-8)
        return w @ mu, w @ logvar


def contrastive_loss(z, code_mu, y, tau):
    """Eq. 14: -log sim(z_i, z_p) / sum_t sim(z_i, z_t), sim = exp(cos / tau), positives the active codes.

    z [R, D]; code_mu [K, D]; y [R, K] (one-hot, possibly straight-through). Returns [R].
    """
    logits = F.normalize(z, dim=-1) @ F.normalize(code_mu, dim=-1).T / tau
    return F.cross_entropy(logits, y.detach().argmax(-1), reduction="none")
