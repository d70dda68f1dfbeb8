"""Generators: the rule-based baseline and the trained latent diffusion model; ``load_generator`` picks one."""
from __future__ import annotations

import os

SHIPPED_WEIGHTS = os.path.join(os.path.dirname(os.path.dirname(os.path.abspath(__file__))), "weights", "latcpb.pt")


def load_generator(name_or_path="latcpb", device=None):
    """'geometric' (rules), 'latcpb' (shipped weights) or a checkpoint path -> a generator object."""
    if name_or_path == "geometric":
        from latcpb.model.geometric import GeometricGenerator

        return GeometricGenerator()
    from latcpb.model.latent_generator import LatentDiffusionGenerator

    path = SHIPPED_WEIGHTS if name_or_path in (None, "latcpb") else name_or_path
    return LatentDiffusionGenerator.from_checkpoint(path, device=device)
