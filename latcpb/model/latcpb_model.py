"""The LatCPB network: CG encoder, all-atom encoder with discrete latent and multimodal prior, CG-conditioned prior,
decoder to internal coordinates + NeRF, and the latent diffusion model. Config values come from the JSON config."""
from __future__ import annotations

import copy

import torch
from torch import nn

from latcpb.model.decoder import Decoder, DofDecoder, build_coordinates
from latcpb.model.diffusion import LatentDiffusion, standard_noise
from latcpb.model.encoders import AllAtomEncoder, CGContext, CGEncoder, mlp
from latcpb.model.latent import DiscreteLatent, MultimodalPrior, contrastive_loss, gaussian_kl
from latcpb.model.losses import clash_loss, dof_loss, reconstruction_loss

DEFAULT_MODEL = {
    "width": 128, "latent_dim": 12, "n_codes": 16, "code_dim": 32, "graph_cutoff": 10.0, "attn_cutoff": 12.0,
    "cg_conv_width": 32, "cg_layers": 2, "aa_atom_width": 32, "aa_atom_cutoff": 8.0, "aa_layers": 1,
    "decoder_layers": 2, "denoiser_layers": 3, "heads": 4, "diffusion_steps": 500, "theta_range": 0.35,
    "discrete": True, "rigid_rings": True, "decoder_dofs": False,
}
DEFAULT_LOSS = {
    "xyz": 1.0, "bond": 1.0, "angle": 0.5, "torsion": 0.5, "clash": 0.1, "clash_distance": 2.5,
    "kl_prior": 0.01, "contrastive": 0.05, "tau": 0.1, "kl_cg": 0.01, "prior_recon": 0.5, "chi_bins": 0.2,
}


def merged(defaults, values):
    """defaults updated by values (unknown keys rejected with the list of known ones)."""
    values = values or {}
    unknown = set(values) - set(defaults)
    if unknown:
        raise ValueError(f"unknown config keys {sorted(unknown)}; known: {sorted(defaults)}")
    out = copy.deepcopy(defaults)
    out.update(values)
    return out


def _logvar(x):
    """Softly bounded log-variance in (-8, 2)."""
    return -8.0 + 10.0 * torch.sigmoid(x)


class LatCPB(nn.Module):
    """All modules of the model; ``config`` is the "model" section of the JSON config."""

    def __init__(self, config=None):
        super().__init__()
        self.config = c = merged(DEFAULT_MODEL, config)
        w, d = c["width"], c["latent_dim"]
        self.latent_dim = d
        self.cg_encoder = CGEncoder(w, c["cg_conv_width"], c["graph_cutoff"], c["cg_layers"], c["heads"])
        self.aa_encoder = AllAtomEncoder(w, c["aa_atom_width"], c["aa_atom_cutoff"], c["aa_layers"], c["heads"])
        self.posterior = mlp(w, w, 2 * d)
        self.cg_prior = mlp(w, w, 2 * d)
        if c["discrete"]:
            self.discrete = DiscreteLatent(w, c["n_codes"])
            self.prior = MultimodalPrior(c["n_codes"], c["code_dim"], d)
        if c["decoder_dofs"]:   # the structure builder's degrees of freedom (peptide rotations, chi bins + offsets)
            self.decoder = DofDecoder(d, w, c["decoder_layers"], c["heads"])
        else:                   # internal coordinates of every slot + NeRF (the shipped weights)
            self.decoder = Decoder(d, w, c["decoder_layers"], c["heads"], c["theta_range"], c["rigid_rings"])
        self.diffusion = LatentDiffusion(d, w, c["denoiser_layers"], c["heads"], c["diffusion_steps"])

    def context(self, ca, lt, segment):
        return CGContext(ca, lt, segment, self.config["graph_cutoff"], self.config["attn_cutoff"])

    def autoencoder_parameters(self):
        return [p for n, p in self.named_parameters() if not n.startswith("diffusion.")]

    def encode(self, ctx, xyz, present, h_cg):
        """Posterior q(z | x, CG): (mu [R, D], logvar [R, D], h_aa [R, width])."""
        h_aa = self.aa_encoder(ctx, xyz, present, h_cg)
        mu, lv = self.posterior(h_aa).chunk(2, -1)
        return mu, _logvar(lv), h_aa

    def prior_cg(self, h_cg):
        """CG-conditioned prior p(z | CG): (mu, logvar) [R, D]."""
        mu, lv = self.cg_prior(h_cg).chunk(2, -1)
        return mu, _logvar(lv)

    def autoencoder_loss(self, xyz, present, residue_mask, lt, segment, weights, generator=None):
        """Eq. 15: L_R + L_E + L_M + L_C + L_K (+ reconstruction from the CG prior mean). Returns (loss, logs)."""
        ca = xyz[:, 1]
        ctx = self.context(ca, lt, segment)
        h_cg = self.cg_encoder(ctx)
        mu, logvar, h_aa = self.encode(ctx, xyz, present, h_cg)
        z = mu + (0.5 * logvar).exp() * torch.randn(mu.shape, generator=generator, device=mu.device)
        m = residue_mask.to(mu.dtype)
        mean = lambda v: (v * m).sum() / m.sum().clamp(min=1)  # noqa: E731
        logs = {}
        if self.config["discrete"]:
            y, p = self.discrete(h_aa, sample=self.training, generator=generator)
            mu_k, lv_k = self.prior.selected(y)
            l_m = mean(gaussian_kl(mu, logvar, mu_k, lv_k))
            l_c = mean(contrastive_loss(z, self.prior.components()[0], y, weights["tau"]))
            usage = (p * m[:, None]).sum(0) / m.sum().clamp(min=1)
            logs["code_perplexity"] = torch.exp(-(usage * usage.clamp(min=1e-9).log()).sum()).detach()
        else:
            l_m = mean(gaussian_kl(mu, logvar, torch.zeros_like(mu), torch.zeros_like(logvar)))
            l_c = mu.new_zeros(())
        mu_c, lv_c = self.prior_cg(h_cg)
        l_k = mean(gaussian_kl(mu, logvar, mu_c, lv_c))
        l_r, pred, rec = self._reconstruction(z, h_cg, ctx, xyz, present, residue_mask, lt, weights)
        l_e = clash_loss(pred, lt, ctx.src, ctx.dst, ctx.last, residue_mask, weights["clash_distance"])
        loss = (l_r + weights["clash"] * l_e + weights["kl_prior"] * l_m + weights["contrastive"] * l_c
                + weights["kl_cg"] * l_k)
        if weights["prior_recon"] > 0:
            l_rp, _, rec_p = self._reconstruction(mu_c, h_cg, ctx, xyz, present, residue_mask, lt, weights)
            loss = loss + weights["prior_recon"] * l_rp
            logs["prior_mse"] = rec_p["mse"]
        logs.update({"loss": loss.detach(), "L_R": l_r.detach(), "L_E": l_e.detach(), "L_M": l_m.detach(),
                     "L_C": l_c.detach(), "L_K": l_k.detach(), **rec})
        return loss, logs

    def _reconstruction(self, z, h_cg, ctx, xyz, present, residue_mask, lt, weights):
        """L_R of decoding z: (loss, predicted xyz [R, 15, 3] Å, dict of terms)."""
        if self.config["decoder_dofs"]:
            return dof_loss(self.decoder, self.decoder(z, h_cg, ctx), xyz, present, residue_mask, lt, weights)
        internals = self.decoder(z, h_cg, ctx)
        pred = build_coordinates(ctx.ca, lt, internals)
        l_r, rec = reconstruction_loss(pred, internals, xyz, present, residue_mask, lt, ctx.first, ctx.last, weights)
        return l_r, pred, rec

    def diffusion_loss(self, xyz, present, residue_mask, lt, segment, generator=None):
        """Eq. 16 on the (frozen) posterior means, scaled by ``diffusion.latent_scale``."""
        ca = xyz[:, 1]
        ctx = self.context(ca, lt, segment)
        with torch.no_grad():
            h_cg = self.cg_encoder(ctx)
            mu, _, _ = self.encode(ctx, xyz, present, h_cg)
        z0 = mu / self.diffusion.latent_scale
        return self.diffusion.loss(z0, h_cg, ctx, residue_mask, generator=generator)

    @torch.no_grad()
    def posterior_scale(self, xyz, present, lt, segment):
        """Per-dimension std of the posterior means [D] (sets ``diffusion.latent_scale``)."""
        ctx = self.context(xyz[:, 1], lt, segment)
        h_cg = self.cg_encoder(ctx)
        mu, _, _ = self.encode(ctx, xyz, present, h_cg)
        return mu.std(0).clamp(min=1e-3)

    def sample_coordinates(self, ca, lt, segment, mode="ddim", steps=10, temperature=0.0, eta=0.0,
                           generator=None, reference=None, refine_steps=0):
        """CG -> all-atom [R, 15, 3] Å. mode: 'ddim' | 'ddpm' (Eq. 8) | 'prior_mean' (decoder on the CG prior mean)
        | 'prior' (z drawn from the CG-conditioned prior, its standard deviation scaled by ``temperature``)
        | 'posterior' (reconstruction from ``reference`` = (xyz, present), for evaluation of the autoencoder).
        ``refine_steps`` > 0: clash relief on the side-chain torsions (``latcpb.model.refine``; internal-coordinate
        decoder only). With ``decoder_dofs`` the structure builder makes the atoms (valid by construction)."""
        ctx = self.context(ca, lt, segment)
        h_cg = self.cg_encoder(ctx)
        if mode == "ddim":
            z = self.diffusion.sample_ddim(h_cg, ctx, self.latent_dim, steps, temperature, eta, generator)
        elif mode == "ddpm":
            z = self.diffusion.sample_ddpm(h_cg, ctx, self.latent_dim, temperature, generator)
        elif mode == "prior_mean":
            z = self.prior_cg(h_cg)[0]
        elif mode == "prior":
            mu, logvar = self.prior_cg(h_cg)
            z = mu + temperature * (0.5 * logvar).exp() * standard_noise(mu.shape, generator, mu)
        elif mode == "posterior":
            z = self.encode(ctx, reference[0], reference[1], h_cg)[0]
        else:
            raise ValueError(f"unknown sampling mode {mode!r}")
        if self.config["decoder_dofs"]:   # chi bins: the most likely (temperature 0) or drawn at the temperature
            from latcpb.geometry.structure import Torsions, build_structure
            t = self.decoder.torsions(self.decoder(z, h_cg, ctx), temperature=temperature, generator=generator)
            return build_structure(ca[None], Torsions(t.peptide[None], t.chi[None], t.ends[None]), lt)[0]
        internals = self.decoder(z, h_cg, ctx)
        if refine_steps > 0:
            from latcpb.model.refine import relieve_clashes
            internals = relieve_clashes(ca, lt, internals, ctx, steps=refine_steps)
        return build_coordinates(ca, lt, internals)

