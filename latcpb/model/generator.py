"""Generators: anything that turns CA traces into heavy-atom coordinates in the 15-slot layout.

``generate(ca [B, N, 3] Å, lt, samples, rng, **options) -> [B * samples, N, 15, 3] Å``, frame-major
(frame 0 sample 0, frame 0 sample 1, ...). ``load_generator`` resolves a model name or checkpoint path.
"""
from __future__ import annotations

import os
from importlib import resources
from typing import Protocol

import torch

from latcpb.errors import LatcpbInputError
from latcpb.geometry.internal_coords import LayoutTensors

SHIPPED_WEIGHTS = str(resources.files("latcpb").joinpath("weights", "latcpb.pt"))  # trained weights in the package


class Generator(Protocol):
    name: str

    def generate(self, ca: torch.Tensor, lt: LayoutTensors, samples: int = 1,
                 rng: torch.Generator | None = None, **options) -> torch.Tensor:
        """CA [B, N, 3] Å -> heavy atoms [B * samples, N, 15, 3] Å."""


def shipped_weights_path() -> str | None:
    """Path of the trained weights shipped inside the package, or None where the package holds none."""
    return SHIPPED_WEIGHTS if os.path.isfile(SHIPPED_WEIGHTS) else None


def load_generator(model: str | None = None, device: torch.device | str = "cpu") -> Generator:
    """``None`` -> the shipped model if present, else ``"geometric"``; ``"latcpb"``; ``"geometric"``; or a path."""
    if model is None:
        model = "latcpb" if shipped_weights_path() else "geometric"
    if model == "geometric":
        from latcpb.model.geometric import GeometricGenerator
        return GeometricGenerator(device=device)
    if model == "latcpb":
        path = shipped_weights_path()
        if path is None:
            raise LatcpbInputError("--model latcpb: this installation ships no trained weights"
                                   " (latcpb/weights/latcpb.pt); use --model geometric or a checkpoint path")
    else:
        path = model
        if not os.path.isfile(path):
            raise LatcpbInputError(f"--model {model}: not 'latcpb', 'geometric' or an existing checkpoint file")
    from latcpb.model.latent_generator import LatentDiffusionGenerator
    return LatentDiffusionGenerator.from_checkpoint(path, device=device)
