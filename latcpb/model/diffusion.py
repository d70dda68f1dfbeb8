"""Latent diffusion over the per-residue latent sequence: cosine schedule, transformer denoiser eps_theta(z_t, t, CG),
DDPM loss (Eq. 16), ancestral sampling (Eq. 8) and a few-step DDIM sampler."""
from __future__ import annotations

import math

import torch
from torch import nn

from latcpb.model.encoders import LocalTransformer, mlp


def cosine_betas(steps, s=0.008):
    """Cosine variance schedule (Nichol & Dhariwal 2021): beta_1..beta_T [T] float64, clipped to 0.999."""
    t = torch.linspace(0, steps, steps + 1, dtype=torch.float64) / steps
    f = torch.cos((t + s) / (1 + s) * math.pi / 2) ** 2
    alpha_bar = f / f[0]
    return (1 - alpha_bar[1:] / alpha_bar[:-1]).clamp(max=0.999)


def timestep_embedding(t, dim):
    """Sinusoidal embedding of integer steps t [R] -> [R, dim]."""
    half = dim // 2
    freq = torch.exp(-math.log(10000.0) * torch.arange(half, device=t.device, dtype=torch.float32) / half)
    arg = t.float()[:, None] * freq[None]
    return torch.cat([torch.sin(arg), torch.cos(arg)], -1)


class Denoiser(nn.Module):
    """eps_theta(z_t [R, D], t [R], h_cg [R, width]) -> eps [R, D]; transformer over residues (spatial mask)."""

    def __init__(self, latent_dim, width=128, layers=3, heads=4):
        super().__init__()
        self.width = width
        self.inp = mlp(latent_dim + 2 * width, width, width)
        self.time = mlp(width, width, width)
        self.transformer = LocalTransformer(width, layers, heads)
        self.out = mlp(width, width, latent_dim)

    def forward(self, z_t, t, h_cg, ctx):
        temb = self.time(timestep_embedding(t, self.width).to(z_t.dtype))
        h = self.inp(torch.cat([z_t, h_cg, temb], -1))
        p = ctx.packing
        return self.out(p.unpad(self.transformer(p.pad(h), ctx.within)))


def standard_noise(shape, generator, like):
    """Standard normal noise drawn on the generator's device (reproducible for a given seed), as ``like``."""
    where = generator.device if generator is not None else like.device
    return torch.randn(shape, generator=generator, device=where).to(like.device, like.dtype)


class LatentDiffusion(nn.Module):
    """Noise schedule buffers + training loss + samplers around a ``Denoiser``."""

    def __init__(self, latent_dim, width=128, layers=3, heads=4, steps=500):
        super().__init__()
        self.steps = steps
        self.denoiser = Denoiser(latent_dim, width, layers, heads)
        betas = cosine_betas(steps)
        alpha_bar = torch.cumprod(1 - betas, 0)
        self.register_buffer("betas", betas.float())
        self.register_buffer("alpha_bar", alpha_bar.float())
        self.register_buffer("latent_scale", torch.ones(latent_dim))  # z0 = posterior mean / scale

    def loss(self, z0, h_cg, ctx, mask, generator=None):
        """Eq. 16: E ||eps - eps_theta(z_t, t)||^2 with one t per segment. z0 [R, D] scaled latents; mask [R]."""
        seg_t = torch.randint(0, self.steps, (ctx.packing.batch,), device=z0.device, generator=generator)
        t = seg_t[ctx.packing.row]
        eps = torch.randn(z0.shape, device=z0.device, generator=generator)
        ab = self.alpha_bar[t][:, None]
        z_t = ab.sqrt() * z0 + (1 - ab).sqrt() * eps
        err = ((self.denoiser(z_t, t, h_cg, ctx) - eps) ** 2).mean(-1)
        m = mask.to(err.dtype)
        return (err * m).sum() / m.sum().clamp(min=1)

    def sample_ddpm(self, h_cg, ctx, latent_dim, temperature=1.0, generator=None):
        """Ancestral sampling, Eq. 8, all T steps; rho_t = temperature * sqrt(posterior variance). -> z0 [R, D]."""
        n, dev = h_cg.shape[0], h_cg.device
        z = temperature * standard_noise((n, latent_dim), generator, h_cg)
        for step in reversed(range(self.steps)):
            t = torch.full((n,), step, device=dev, dtype=torch.long)
            beta, ab = self.betas[step], self.alpha_bar[step]
            ab_prev = self.alpha_bar[step - 1] if step > 0 else torch.ones_like(ab)
            eps = self.denoiser(z, t, h_cg, ctx)
            z = (z - beta / (1 - ab).sqrt() * eps) / (1 - beta).sqrt()
            if step > 0:
                var = beta * (1 - ab_prev) / (1 - ab)
                z = z + temperature * var.sqrt() * standard_noise(z.shape, generator, h_cg)
        return z * self.latent_scale

    def sample_ddim(self, h_cg, ctx, latent_dim, steps=10, temperature=1.0, eta=0.0, generator=None, clip=4.0):
        """DDIM over ``steps`` evenly spaced steps; the start z_T and any eta noise scaled by ``temperature``.

        temperature 0 with eta 0 is deterministic (mode-seeking). The z0 estimate of every step is clipped to
        [-clip, clip] (latents are scaled to unit std; near t = T the estimate divides by sqrt(alpha_bar) ~ 0).
        -> z0 [R, D] (unscaled latents).
        """
        n, dev = h_cg.shape[0], h_cg.device
        times = torch.linspace(self.steps - 1, 0, steps, device=dev).round().long().tolist()
        z = temperature * standard_noise((n, latent_dim), generator, h_cg)
        for k, step in enumerate(times):
            t = torch.full((n,), step, device=dev, dtype=torch.long)
            ab = self.alpha_bar[step]
            ab_prev = self.alpha_bar[times[k + 1]] if k + 1 < len(times) else torch.ones_like(ab)
            eps = self.denoiser(z, t, h_cg, ctx)
            z0 = ((z - (1 - ab).sqrt() * eps) / ab.sqrt()).clamp(-clip, clip)
            eps = (z - ab.sqrt() * z0) / (1 - ab).sqrt()
            if k + 1 == len(times):
                z = z0
                break
            sigma = eta * ((1 - ab_prev) / (1 - ab) * (1 - ab / ab_prev)).clamp(min=0).sqrt()
            z = ab_prev.sqrt() * z0 + (1 - ab_prev - sigma ** 2).clamp(min=0).sqrt() * eps
            if eta > 0:
                z = z + temperature * sigma * standard_noise(z.shape, generator, h_cg)
        return z * self.latent_scale
