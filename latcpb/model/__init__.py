"""Generators: the rule-based baseline and the trained latent diffusion model; ``load_generator`` picks one."""
from latcpb.model.generator import SHIPPED_WEIGHTS, Generator, load_generator

__all__ = ["SHIPPED_WEIGHTS", "Generator", "load_generator"]
