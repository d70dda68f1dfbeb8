"""CG-like perturbations of CA traces, so that a model trained on atomistic CA traces meets CG force-field traces.

What the perturbations imitate (each a pure function of a trace [..., N, 3] Å, chain labels [N] and a
``torch.Generator``):
- ``jitter_beads``: thermal bead motion of one-bead-per-residue models (HPS, MOFF, Mpipi: harmonic CA-CA bonds
  around 3.8 Å, no angle potential or a soft one), split into motion along the chain (``tangential`` Å: spacing
  noise) and across it (``normal`` Å: virtual-angle noise). Every bead moves by at most ``max_shift`` Å. Bead
  spacing in such runs ranges 2.5-5.1 Å.
- ``smooth_segments``: traces that are smoother than atomistic ones (bead positions averaged with their neighbours
  by a weight up to ``smooth_weight``), as centroid- or Martini-BB-like beads and averaged CG frames give.
- ``straighten_segments``: straight stretches of CG start structures (chains built extended, linkers straight):
  the beads of a segment of ``straight_length`` residues placed evenly on the line between its end beads, only
  where the resulting spacing stays within ``straight_spacing`` Å.
``cg_like_trace`` chains them; its output has every CA-CA step within ``spacing`` Å (2.5-5.1, the range of real CG
runs) and every bead within ``max_total_shift`` Å of the input (the perturbation of the beads at fault is scaled
down until both hold). ``augment_batch`` applies it to a training ``Batch`` (see there).
"""
from __future__ import annotations

import math
from dataclasses import dataclass, fields

import numpy as np
import torch

from latcpb.errors import LatcpbInputError


@dataclass(frozen=True)
class CGPerturbation:
    """Parameters of ``cg_like_trace`` (Å unless noted). The defaults span the HPS/MOFF/Mpipi spacing range."""

    tangential: float = 0.25          # sd of bead motion along the chain (spacing noise)
    normal: float = 0.25              # sd of bead motion across the chain (angle noise)
    max_shift: float = 0.6            # cap of the jitter of one bead
    smooth_fraction: float = 0.15     # expected share of residues in smoothed segments
    smooth_length: tuple = (4, 12)    # residues per smoothed segment (min, max)
    smooth_weight: float = 0.35       # largest weight of the neighbours' mean in the smoothing
    straight_fraction: float = 0.1    # expected share of residues in straightened segments
    straight_length: tuple = (4, 8)   # residues per straightened segment (min, max), end beads included
    straight_spacing: tuple = (3.2, 4.2)  # straightening only where the even spacing falls in this range
    spacing: tuple = (2.5, 5.1)       # every CA-CA step of the output lies in this range
    max_total_shift: float = 1.5      # no bead moves further than this from the input

    @classmethod
    def from_config(cls, values):
        """From a config dict (unknown keys rejected by name; lists become tuples)."""
        values = dict(values or {})
        known = {f.name for f in fields(cls)}
        unknown = set(values) - known - {"probability", "refine", "targets"}
        if unknown:
            raise LatcpbInputError(f"config data.augment: unknown keys {sorted(unknown)}; known: {sorted(known)}")
        return cls(**{k: tuple(v) if isinstance(v, list) else v for k, v in values.items() if k in known})


def _chain_masks(chain_index, n, device):
    chain = torch.as_tensor(np.asarray(chain_index), dtype=torch.long, device=device)
    step = chain[1:] == chain[:-1]                               # [N-1]
    interior = torch.zeros(n, dtype=torch.bool, device=device)
    if n > 2:
        interior[1:-1] = step[:-1] & step[1:]
    return chain, step, interior


def _tangents(ca, chain, step):
    """Unit chain direction at every bead [..., N, 3] (CA_i+1 - CA_i-1, one-sided at chain ends)."""
    n = ca.shape[-2]
    nxt = torch.arange(n, device=ca.device) + 1
    prv = torch.arange(n, device=ca.device) - 1
    has_next = torch.zeros(n, dtype=torch.bool, device=ca.device)
    has_prev = torch.zeros(n, dtype=torch.bool, device=ca.device)
    has_next[:-1] = step
    has_prev[1:] = step
    nxt = torch.where(has_next, nxt, torch.arange(n, device=ca.device))
    prv = torch.where(has_prev, prv, torch.arange(n, device=ca.device))
    t = ca[..., nxt, :] - ca[..., prv, :]
    return t / torch.linalg.norm(t, dim=-1, keepdim=True).clamp(min=1e-9)


def jitter_beads(ca, chain_index, tangential, normal, max_shift, generator):
    """Beads moved by Gaussian noise: sd ``tangential`` Å along the chain, ``normal`` Å across it, each bead's move
    capped at ``max_shift`` Å. ca [..., N, 3] Å -> same shape."""
    chain, step, _ = _chain_masks(chain_index, ca.shape[-2], ca.device)
    t = _tangents(ca, chain, step)
    g = torch.randn(ca.shape, generator=generator, dtype=ca.dtype, device=ca.device)
    along = (g * t).sum(-1, keepdim=True)
    move = tangential * along * t + normal * (g - along * t)
    length = torch.linalg.norm(move, dim=-1, keepdim=True)
    move = move * (max_shift / length.clamp(min=1e-12)).clamp(max=1.0)
    return ca + move


def _segments(chain_index, fraction, length_range, generator):
    """Random segments (start, stop) inside chains: about ``fraction`` of the residues, lengths in the range."""
    chain = np.asarray(chain_index)
    n = len(chain)
    lo, hi = int(length_range[0]), int(length_range[1])
    mean_len = 0.5 * (lo + hi)
    count = int(torch.poisson(torch.tensor([fraction * n / mean_len]), generator=generator).item())
    out = []
    for _ in range(count):
        length = int(torch.randint(lo, hi + 1, (1,), generator=generator).item())
        start = int(torch.randint(0, max(1, n - length + 1), (1,), generator=generator).item())
        stop = min(n, start + length)
        if stop - start >= 3 and chain[start] == chain[stop - 1]:
            out.append((start, stop))
    return out


def smooth_segments(ca, chain_index, fraction, length_range, max_weight, generator):
    """Segments of the trace averaged towards their neighbours: x_i <- (1 - w) x_i + w (x_i-1 + x_i+1) / 2 with one
    weight w <= ``max_weight`` per segment (interior beads only). ca [..., N, 3] Å."""
    _, _, interior = _chain_masks(chain_index, ca.shape[-2], ca.device)
    out = ca.clone()
    for start, stop in _segments(chain_index, fraction, length_range, generator):
        w = float(torch.rand((), generator=generator)) * max_weight
        idx = torch.arange(start, stop, device=ca.device)
        idx = idx[interior[idx]]
        if len(idx):
            mean = 0.5 * (ca[..., idx - 1, :] + ca[..., idx + 1, :])
            out[..., idx, :] = (1 - w) * ca[..., idx, :] + w * mean
    return out


def straighten_segments(ca, chain_index, fraction, length_range, spacing_range, generator):
    """Segments whose beads are put evenly on the line between the segment's end beads (where the even spacing
    lies in ``spacing_range`` Å in every frame). ca [..., N, 3] Å."""
    out = ca.clone()
    for start, stop in _segments(chain_index, fraction, length_range, generator):
        a, b = ca[..., start, :], ca[..., stop - 1, :]
        steps = stop - 1 - start
        spacing = torch.linalg.norm(b - a, dim=-1) / steps
        if bool(((spacing < spacing_range[0]) | (spacing > spacing_range[1])).any()):
            continue
        frac = torch.arange(1, steps, device=ca.device, dtype=ca.dtype) / steps   # [L-2]
        out[..., start + 1:stop - 1, :] = a[..., None, :] + frac[:, None] * (b - a)[..., None, :]
    return out


def cg_like_trace(ca, chain_index, params: CGPerturbation = CGPerturbation(), generator=None):
    """A CG-like version of the CA trace ca [F, N, 3] (or [N, 3]) Å: straightened and smoothed segments, then bead
    jitter. Every step stays within ``params.spacing`` and every bead within ``params.max_total_shift`` of ``ca``
    (the perturbation of the beads at fault is halved until it does, and dropped after 12 halvings).
    Same generator state, same output."""
    x = torch.as_tensor(ca)
    single = x.dim() == 2
    x = x[None] if single else x
    chain, step, _ = _chain_masks(chain_index, x.shape[-2], x.device)
    y = straighten_segments(x, chain_index, params.straight_fraction, params.straight_length,
                            params.straight_spacing, generator)
    y = smooth_segments(y, chain_index, params.smooth_fraction, params.smooth_length, params.smooth_weight,
                        generator)
    y = jitter_beads(y, chain_index, params.tangential, params.normal, params.max_shift, generator)
    delta = y - x
    lo, hi = params.spacing
    orig = torch.linalg.norm(x[:, 1:] - x[:, :-1], dim=-1)
    # steps already outside the range (e.g. a chain break) are not the perturbation's to fix
    checked = step & ((orig >= lo) & (orig <= hi))
    scale = torch.ones(x.shape[:2], dtype=x.dtype, device=x.device)          # [F, N] per bead
    for round_ in range(13 + x.shape[1]):   # every round after the 12th drops at least one more bead's
        z = x + scale[..., None] * delta
        d = torch.linalg.norm(z[:, 1:] - z[:, :-1], dim=-1)
        bad_step = ((d < lo) | (d > hi)) & checked
        bad = torch.linalg.norm(z - x, dim=-1) > params.max_total_shift
        bad[:, :-1] |= bad_step
        bad[:, 1:] |= bad_step
        if not bool(bad.any()):
            break
        # the perturbation of the beads at fault is halved (after 12 rounds: dropped), the rest kept
        scale = torch.where(bad, 0.5 * scale if round_ < 12 else torch.zeros_like(scale), scale)
    z = x + scale[..., None] * delta
    return z[0] if single else z


def augment_batch(batch, config, generator):
    """A training ``Batch`` whose CA trace is CG-like (``config`` = the data.augment section: CGPerturbation keys,
    ``probability`` (share of crops perturbed, default 1), ``refine`` (default true: then moved by
    ``latcpb.geometry.ca_trace.refine_ca_trace``, as inference does), ``targets``: "follow" (default: every
    residue's atoms translated with its CA, so the target keeps its residue geometry on the new trace) or "keep"
    (only the CA slot changes)). Other fields are shared with ``batch``."""
    from latcpb.geometry.ca_trace import refine_ca_trace
    from latcpb.training.dataset import Batch

    config = dict(config or {})
    params = CGPerturbation.from_config(config)
    probability = float(config.get("probability", 1.0))
    targets = config.get("targets", "follow")
    if targets not in ("follow", "keep"):
        raise LatcpbInputError(f"config data.augment.targets: 'follow' or 'keep', not {targets!r}")
    ca = batch.xyz[:, 1]
    chain = batch.layout.chain_index
    new = cg_like_trace(ca, chain, params, generator)
    if probability < 1.0:
        seg = batch.segment
        pick = torch.rand(int(seg.max()) + 1, generator=generator) < probability
        new = torch.where(pick.to(seg.device)[seg][:, None], new, ca)
    if config.get("refine", True):
        new = refine_ca_trace(new, batch.layout, max_rms=math.inf).ca
    shift = (new - ca).to(batch.xyz.dtype)
    xyz = batch.xyz.clone()
    if targets == "follow":
        xyz = xyz + shift[:, None, :]
    else:
        xyz[:, 1] = new
    return Batch(xyz, batch.present, batch.loss_mask, batch.segment, batch.layout)
