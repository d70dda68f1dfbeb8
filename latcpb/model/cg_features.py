"""Invariant features of the CA trace and the residue graph, from CA coordinates and a ``LayoutTensors``.

Everything works on a packed system of R residues (several frames or crops side by side, told apart by
``segment`` [R]); chain boundaries come from the layout (a residue starts a chain when its N anchor looks forward).
"""
from __future__ import annotations

import torch
import torch.nn.functional as F

from latcpb.geometry.nerf import bond_angle, dihedral

CG_FEATURE_DIM = 43  # length of ``trace_features`` output


def chain_ends(lt):
    """(is_first [R] bool, is_last [R] bool) from the layout anchors."""
    idx = torch.arange(len(lt.restype), device=lt.restype.device)
    return lt.n_ref_b == idx + 1, lt.c_ref_a == idx - 1


def _shift(ca, k, valid_step_fwd, valid_step_bwd):
    """CA of residue i+k [R, 3] and its validity [R] (same chain, all steps inside)."""
    r = ca.shape[0]
    idx = torch.arange(r, device=ca.device)
    valid = torch.ones(r, dtype=torch.bool, device=ca.device)
    step = valid_step_fwd if k > 0 else valid_step_bwd
    cur = idx
    for _ in range(abs(k)):
        valid = valid & step[cur.clamp(0, r - 1)]
        cur = cur + (1 if k > 0 else -1)
    return ca[cur.clamp(0, r - 1)], valid


def trace_features(ca, lt):
    """Invariant per-residue features of the CA trace: [R, CG_FEATURE_DIM].

    ca [R, 3] Å. Distances to i+-1..3 (scaled, zero when absent) and presence flags, virtual bond angles at
    i-1, i, i+1 (cos, sin), virtual dihedrals (i-3..i), (i-2..i+1), (i-1..i+2), (i..i+3) as signed (sin, cos),
    chain-start, chain-end and OXT flags.
    """
    first, last = chain_ends(lt)
    fwd, bwd = ~last, ~first
    pts, ok = {0: ca}, {0: torch.ones_like(first)}
    for k in (-3, -2, -1, 1, 2, 3):
        pts[k], ok[k] = _shift(ca, k, fwd, bwd)
    feats = []
    for k in (-3, -2, -1, 1, 2, 3):
        d = torch.linalg.norm(pts[k] - ca, dim=-1)
        feats += [torch.where(ok[k], (d - 3.8 * min(abs(k), 2)) / 3.0, torch.zeros_like(d)), ok[k].to(ca.dtype)]
    for c in (-1, 0, 1):
        ang = bond_angle(pts[c - 1], pts[c], pts[c + 1])
        v = ok[c - 1] & ok[c + 1] & ok[c]
        feats += [torch.where(v, torch.cos(ang), 0.0 * ang), torch.where(v, torch.sin(ang), 0.0 * ang),
                  v.to(ca.dtype)]
    for a in (-3, -2, -1, 0):
        dih = dihedral(pts[a], pts[a + 1], pts[a + 2], pts[a + 3])
        v = ok[a] & ok[a + 3]
        feats += [torch.where(v, torch.sin(dih), 0.0 * dih), torch.where(v, torch.cos(dih), 0.0 * dih),
                  v.to(ca.dtype)]
    feats += [first.to(ca.dtype), last.to(ca.dtype), lt.atom_mask[:, 14].to(ca.dtype)]
    # padding up to CG_FEATURE_DIM keeps the width stable if features are added
    out = torch.stack(feats, dim=-1)
    return F.pad(out, (0, CG_FEATURE_DIM - out.shape[-1]))


class Packing:
    """Packed residues [R, ...] <-> padded per-segment tensors [B, L, ...] (segments contiguous in order)."""

    def __init__(self, segment):
        device = segment.device
        self.n = segment.shape[0]
        counts = torch.bincount(segment)
        self.lengths = counts[counts > 0]
        self.batch = len(self.lengths)
        self.max_len = int(self.lengths.max())
        starts = torch.cumsum(self.lengths, 0) - self.lengths
        seg_rank = torch.repeat_interleave(torch.arange(self.batch, device=device), self.lengths)
        self.row = seg_rank                                               # [R]
        self.col = torch.arange(self.n, device=device) - starts[seg_rank]  # [R]
        self.mask = torch.zeros(self.batch, self.max_len, dtype=torch.bool, device=device)
        self.mask[self.row, self.col] = True

    def pad(self, x, value=0.0):
        """[R, ...] -> [B, L, ...]."""
        out = x.new_full((self.batch, self.max_len, *x.shape[1:]), value)
        out[self.row, self.col] = x
        return out

    def unpad(self, x):
        """[B, L, ...] -> [R, ...]."""
        return x[self.row, self.col]


def radius_graph(ca, packing, cutoff, chunk_elements=2 ** 24):
    """Directed edges (src, dst) between residues of one segment with CA-CA distance < cutoff Å (no self loops).

    Distances by ``torch.cdist(..., compute_mode='donot_use_mm_for_euclid_dist')`` (exact at the cutoff),
    computed per padded segment in chunks. Returns (src [E], dst [E]) packed indices and the padded
    distance mask within ``cutoff`` [B, L, L] bool.
    """
    padded = packing.pad(ca)                       # [B, L, 3]
    index = packing.pad(torch.arange(packing.n, device=ca.device), value=-1)
    per = max(1, chunk_elements // max(1, packing.max_len ** 2))
    masks = []
    for s in range(0, packing.batch, per):
        d = torch.cdist(padded[s:s + per], padded[s:s + per], compute_mode="donot_use_mm_for_euclid_dist")
        m = packing.mask[s:s + per]
        masks.append((d < cutoff) & m[:, :, None] & m[:, None, :])
    within = torch.cat(masks)
    eye = torch.eye(packing.max_len, dtype=torch.bool, device=ca.device)
    b, i, j = torch.nonzero(within & ~eye, as_tuple=True)
    return index[b, j], index[b, i], within
