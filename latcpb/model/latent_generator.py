"""The trained LatCPB model behind the ``Generator`` interface used by the Backmapper."""
from __future__ import annotations

import numpy as np
import torch

from latcpb.geometry import residue_constants as rc
from latcpb.geometry.internal_coords import LayoutTensors, ResidueLayout
from latcpb.geometry.structure import fit_structure
from latcpb.model.refine import relieve_built_clashes


BUILT_RELIEF_STEPS = 80   # clash relief steps on the built structure (peptides, chain ends, chi). On val, 2 frames
#                           an entry: severe overlaps 30.7 (side chains only) -> 10.2 per 1000 atoms at 40 steps, 7.6
#                           at 80; heavy RMSD 1.406 -> 1.400 -> 1.381 Å. 80, not 40: 40 left two ARG NH2 of T0871
#                           1.7 Å apart and its MD ran into NaN. lr 0.2 x 20 steps overshoots (39.2).
RESCUE_STEPS = 20         # relief steps after overlapping peptides and side chains tried other turns (val, 2 frames an
#                           entry: overlaps 7.6 -> 5.7 per 1000 atoms, heavy RMSD 1.381 -> 1.374 Å)


def tile_layout(layout: ResidueLayout, copies: int) -> ResidueLayout:
    """``copies`` independent copies of a layout side by side (chains never joined)."""
    span = int(layout.chain_index.max()) + 1 if len(layout) else 0
    chain = np.concatenate([layout.chain_index + k * span for k in range(copies)])
    return ResidueLayout.from_chains(np.tile(layout.restype, copies), chain, np.tile(layout.has_oxt, copies))


class LatentDiffusionGenerator:
    """CG -> all-atom with the latent diffusion model.

    One sample per frame with no temperature given is mode-seeking: ``inference.single_mode`` "prior_mean" decodes
    the mode of the CG-conditioned prior p(z | CG) (the default: best validation figures), "ddim" runs deterministic
    DDIM from z_T = 0. Several samples per frame, or an explicit temperature, draw latents with
    ``inference.sample_mode``: "ddim" (the latent diffusion model from z_T = temperature * noise) or "prior"
    (p(z | CG) with its standard deviation scaled by the temperature); ``sample_temperature`` = 1.0 is the learned
    distribution.

    A model with ``model.decoder_dofs`` predicts the builder's degrees of freedom (peptide rotations, chain-end
    torsions, chi bins and offsets) and the structure builder makes the atoms. For the internal-coordinate decoder
    the decoder's NeRF output gives only its peptide rotations and chain-end torsions, and chi fitted to its
    side-chain atoms (``structure.fit_structure``; ``inference.structure_builder``, default on). Either way the
    output is valid chemistry by construction; clash relief then turns the builder's degrees of freedom (peptide
    rotations, chain-end torsions, chi) against overlaps (``inference.built_relief_steps``, default
    ``BUILT_RELIEF_STEPS``; 0 turns it off), which keeps it valid.
    """

    name = "latcpb"

    def __init__(self, model, config, device=None, max_residues=8192):
        self.device = torch.device(device or "cpu")
        self.model = model.to(self.device).eval()
        self.config = config
        self.inference = config["inference"]
        self.max_residues = max_residues

    @classmethod
    def from_checkpoint(cls, path, device=None):
        """Load a checkpoint written by ``latcpb-train`` (or the shipped weights) with ``weights_only=True``; bad files,
        and files holding Python objects that could run code, raise LatcpbInputError naming the file."""
        from latcpb.training.checkpoint import model_from_checkpoint

        model, state = model_from_checkpoint(str(path), map_location="cpu")
        return cls(model, state["config"], device)

    def generate(self, ca, lt, samples=1, rng=None, steps=None, temperature=None, eta=None, relief_steps=None):
        """ca [B, N, 3] Å tensor; lt: LayoutTensors of the N residues -> [B * samples, N, 15, 3] Å, frame-major
        (frame 0 sample 0, frame 0 sample 1, ...). ``rng``: torch.Generator (same seed -> same output).
        ``relief_steps``: clash-relief steps (None: the model's ``inference`` setting; 0: no relief and no rescue,
        faster and with more overlaps; a built structure stays valid chemistry either way)."""
        mode = self.inference.get("sample_mode", "ddim")
        if temperature is None and samples == 1:
            mode = self.inference.get("single_mode", "ddim")
            temperature = self.inference["temperature"]
        elif temperature is None:
            temperature = self.inference["sample_temperature"]
        steps = int(steps or self.inference["steps"])
        eta = self.inference["eta"] if eta is None else eta
        b, n, _ = ca.shape
        out_dtype = ca.dtype if torch.is_floating_point(ca) else torch.float32
        layout = lt.layout
        per_chunk = max(1, self.max_residues // max(1, n))
        xyz_all = ca.to(self.device, torch.float32).repeat_interleave(samples, dim=0)  # [B*samples, N, 3]
        total = xyz_all.shape[0]
        outputs = []
        tiled_cache = {}
        lt_device = lt if lt.restype.device == self.device else LayoutTensors(layout, self.device)
        with torch.inference_mode():
            for s in range(0, total, per_chunk):
                part = xyz_all[s:s + per_chunk]
                f = part.shape[0]
                if f not in tiled_cache:
                    tiled_cache[f] = LayoutTensors(tile_layout(layout, f), self.device)
                segment = torch.arange(f, device=self.device).repeat_interleave(n)
                dofs = bool(self.model.config["decoder_dofs"])   # the decoder gives the builder's DOFs itself
                fit = not dofs and self.inference.get("structure_builder", True)
                built = dofs or fit
                relief = int(self.inference.get("built_relief_steps", BUILT_RELIEF_STEPS) if built
                             else self.inference.get("refine_steps", 0)) if relief_steps is None else int(relief_steps)
                xyz = self.model.sample_coordinates(part.reshape(f * n, 3), tiled_cache[f], segment, mode=mode,
                                                    steps=steps, temperature=float(temperature), eta=float(eta),
                                                    generator=rng, refine_steps=0 if built else relief)
                if fit:
                    # the decoder's peptide rotations and chi, built by the structure builder: valid chemistry
                    xyz = fit_structure(xyz.view(f, n, rc.ATOMS_PER_RESIDUE, 3), lt_device).reshape(f * n, -1, 3)
                if built and relief > 0:   # clash relief turns the builder's DOFs (still valid chemistry)
                    # strain terms (rotamer and Ramachandran wells) where decoding seeks the mode, whose mean
                    # falls between wells; draws (temperature > 0) keep the spread of the learned distribution
                    xyz = relieve_built_clashes(xyz, tiled_cache[f], segment, steps=relief,
                                                rescue_steps=int(self.inference.get("rescue_steps", RESCUE_STEPS)),
                                                strain=float(temperature) == 0.0)
                outputs.append(xyz.view(f, n, rc.ATOMS_PER_RESIDUE, 3))
        out = torch.cat(outputs).to(out_dtype)
        # the CA trace is kept exactly
        out[:, :, 1] = ca.to(out.device, out_dtype).repeat_interleave(samples, dim=0)
        return out.to(ca.device)
