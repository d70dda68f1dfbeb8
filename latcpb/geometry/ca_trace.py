"""CA traces that admit valid chemistry, and the smallest move that makes a coarse-grained trace one.

A CG force field's beads are not atomistic CA positions: bead spacing of HPS/MOFF/Mpipi/Martini runs ranges
2.5-5.1 Å and start structures have straight segments, which no chain of ideal peptide units can follow. This
module tells which residues of a trace do not admit valid chemistry (``trace_violations``) and moves the trace to a
nearby one that does (``refine_ca_trace``): batched over frames, constraint projection in torch, bounded (frames
that would need more than ``max_rms`` are flagged), and beads of a valid trace are returned bit for bit.

Limits (``TraceLimits``) were measured on the CA traces of ``/work/shared/data/train`` (69,487 trans and 170 cis
steps, 69,083 virtual angles of residues with sane bond geometry; quantiles 0.01 % / 0.1 % / 99.9 % / 99.99 %):
- trans CA_i-CA_i+1: 3.53 / 3.66 / 4.00 / 4.04 Å (1 % / 99 %: 3.73 / 3.94; median 3.807, sd 0.039): valid
  3.68-3.92 Å, the range in which the decoder's ideal trans unit (``latcpb.geometry.backbone``) leaves no bond-angle
  outlier: backmapping (``--model geometric``) jittered val traces refined to 3.63-3.97 left 36-80 % of residues
  with an angle outlier, to 3.65-3.95 13-37 %, to 3.68-3.92 none (``bench/cg_like_traces.py --backmap``).
  2.2 % of train steps (none of the val traces) lie outside and are moved by a few hundredths of an Å;
- cis: 2.74 (minimum) - 3.36 (maximum) Å, median 2.97: valid 2.70-3.05 Å, and a step is a cis candidate below
  3.3 Å. Both follow the decoder's ideal planar cis unit (``latcpb.geometry.backbone``: cis below
  ``CIS_CA_DISTANCE`` 3.3 Å, which fits CA-CA 2.71-3.01 Å within 3.5 sigma of Engh & Huber): a longer cis step
  has a twisted omega that the planar unit cannot follow (27 % of the train cis steps are longer than 3.05 Å);
- CA_i-1-CA_i-CA_i+1 angle: 72.3 / 79.9 / 152.4 / 165.0 deg: valid 78-155 deg (0.08 % outside). 155 deg also
  keeps the repair of a fully straight chain (a zigzag of +-0.42 Å) under 0.5 Å RMS;
- nearest CA more than two residues away in the chain (or in another chain): 0.1 % quantile 3.46 Å, 0.5 % 3.87 Å
  (closer pairs in train are duplicated chains): valid >= 3.4 Å.

Shapes: F frames, N residues; ``ca`` [F, N, 3] Å. A step is the pair (i, i+1) of one chain ([F, N-1]); a virtual
angle sits on its middle residue ([F, N]).
"""
from __future__ import annotations

import math
from dataclasses import dataclass, field, replace

import numpy as np
import torch

from latcpb.errors import LatcpbInputError
from latcpb.geometry.residue_constants import RESTYPE_INDEX

PRO = RESTYPE_INDEX["PRO"]
CIS_MODES = ("auto", "any", "proline")


@dataclass(frozen=True)
class TraceLimits:
    """Ranges of a CA trace that admits valid chemistry (defaults measured on train, see the module docstring).

    trans, cis: CA_i-CA_i+1 ranges (Å) of trans and cis peptides; a step shorter than ``cis_split`` Å is a cis
    candidate. angle: CA_i-1-CA_i-CA_i+1 range (deg). min_contact: smallest distance (Å) between CAs more than two
    residues apart in a chain or in different chains. atomistic_share: with ``cis="auto"``, a frame where at most
    this share of residues violates the limits is an atomistic trace (its cis steps are kept; the validation
    structures reach 4 %), a frame with more is a CG trace (CG-like distortions: 50-95 %).
    """

    trans: tuple = (3.68, 3.92)
    cis: tuple = (2.70, 3.05)
    angle: tuple = (78.0, 155.0)
    min_contact: float = 3.4
    cis_split: float = 3.3
    atomistic_share: float = 0.15


DEFAULT_LIMITS = TraceLimits()
_MARGIN_DISTANCE = 0.005  # Å: the solver aims this far inside the limits, so float32 results still pass
_MARGIN_ANGLE = math.radians(0.1)
_SLACK_DISTANCE = 1e-4  # Å and deg: a solved trace lies this far inside the limits (float32 rounding is ~1e-5 Å)
_SLACK_ANGLE = 1e-3
_CONTACT_SEARCH = 1.5  # Å beyond min_contact: pairs followed by the solver (re-searched when beads move further)
_STRAIGHT = math.radians(5.0)  # a virtual angle within this of 180 deg is bent in a fixed zigzag plane


@dataclass
class TraceViolations:
    """Where a trace does not admit valid chemistry (all bool).

    spacing [F, N-1]: step i (residues i, i+1) outside the trans/cis range; angle [F, N]: virtual angle at residue
    i outside ``limits.angle``; contact [F, N]: residue i closer than ``limits.min_contact`` to a non-neighbour CA.
    """

    spacing: torch.Tensor
    angle: torch.Tensor
    contact: torch.Tensor

    @property
    def residues(self) -> torch.Tensor:
        """[F, N] bool: residues taking part in any violation (both ends of a bad step)."""
        res = self.angle | self.contact
        res[:, :-1] |= self.spacing
        res[:, 1:] |= self.spacing
        return res

    @property
    def frames(self) -> torch.Tensor:
        """[F] bool: frames with any violation."""
        return self.residues.any(-1)


@dataclass
class CATraceRefinement:
    """Result of ``refine_ca_trace``.

    ca [F, N, 3] Å (dtype and device of the input; bit-identical to the input where a bead was not moved);
    rms [F] Å and max_move [F] Å of the move per frame; changed [F] bool (any bead moved); valid [F] bool (the
    returned trace admits valid chemistry); accepted [F] bool (valid and rms <= max_rms); violations_before: the
    ``TraceViolations`` of the input ([F, ...]). For a single frame [N, 3] the per-frame figures are 0-d.
    """

    ca: torch.Tensor
    rms: torch.Tensor
    max_move: torch.Tensor
    changed: torch.Tensor
    valid: torch.Tensor
    accepted: torch.Tensor
    violations_before: TraceViolations
    max_rms: float = field(default=0.5)

    def raise_if_refused(self, frames=None, source="input"):
        """Raise ``LatcpbInputError`` naming the first refused frame (``frames`` [F]: frame numbers to name)."""
        bad = torch.nonzero(~self.accepted.reshape(-1)).flatten()
        if len(bad) == 0:
            return
        k = int(bad[0])
        frame = int(frames[k]) if frames is not None else k
        more = f" ({len(bad) - 1} more frames)" if len(bad) > 1 else ""
        rms, valid = self.rms.reshape(-1), self.valid.reshape(-1)
        why = (f"needs a {float(rms[k]):.2f} Å RMS move (more than {self.max_rms} Å)" if valid[k]
               else "could not be moved to a CA trace of valid chemistry")
        raise LatcpbInputError(f"{source}: frame {frame}: the CA trace {why}{more}; "
                               "check the bead selection, or keep the beads exact")


@dataclass(frozen=True)
class _Topology:
    step: torch.Tensor        # [N-1] bool: i and i+1 in one chain
    angle: torch.Tensor       # [N] bool: i-1, i, i+1 in one chain
    pro_next: torch.Tensor    # [N-1] bool: residue i+1 is a proline
    chain: torch.Tensor       # [N] long
    index: torch.Tensor       # [N] long


def _topology(chain_index, restype, n, device) -> _Topology:
    chain = torch.as_tensor(np.asarray(chain_index), dtype=torch.long, device=device)
    if chain.shape != (n,):
        raise ValueError(f"chain_index has shape {tuple(chain.shape)}, expected ({n},)")
    step = chain[1:] == chain[:-1]
    angle = torch.zeros(n, dtype=torch.bool, device=device)
    if n > 2:
        angle[1:-1] = step[:-1] & step[1:]
    if restype is None:
        pro_next = torch.ones(max(n - 1, 0), dtype=torch.bool, device=device)
    else:
        rt = torch.as_tensor(np.asarray(restype), dtype=torch.long, device=device)
        pro_next = rt[1:] == PRO
    return _Topology(step, angle, pro_next, chain, torch.arange(n, device=device))


def _unpack_layout(chain_index, restype):
    """Accept a ``ResidueLayout`` (or ``LayoutTensors``) in place of chain_index; take its restype."""
    layout = getattr(chain_index, "layout", chain_index)
    if hasattr(layout, "chain_index") and hasattr(layout, "restype"):
        return np.asarray(layout.chain_index), np.asarray(layout.restype) if restype is None else restype
    return chain_index, restype


def _spacing(x):
    return torch.linalg.norm(x[:, 1:] - x[:, :-1], dim=-1)  # [F, N-1] Å


def _angles(x):
    """Virtual angle at every interior residue [F, N] rad (0 at the ends)."""
    u = x[:, :-2] - x[:, 1:-1]
    v = x[:, 2:] - x[:, 1:-1]
    cos = (u * v).sum(-1) / (torch.linalg.norm(u, dim=-1) * torch.linalg.norm(v, dim=-1)).clamp(min=1e-12)
    out = x.new_zeros(x.shape[:2])
    out[:, 1:-1] = torch.acos(cos.clamp(-1.0, 1.0))
    return out


def _contact_pairs(x, topo, cutoff):
    """Residue pairs that may clash: (i [P], j [P], mask [F, P]) with i < j, not near in one chain, and closer than
    ``cutoff`` Å in some frame (mask: in which). Blocks of frames and rows keep memory at ~2**22 distances."""
    f, n, _ = x.shape
    idx = topo.index
    rows = max(1, (1 << 22) // max(1, f * n))
    found_i, found_j = [], []
    for r0 in range(0, n, rows):
        r = idx[r0:r0 + rows]
        allowed = (idx[None, :] > r[:, None]) & ((topo.chain[None, :] != topo.chain[r][:, None])
                                                 | (idx[None, :] - r[:, None] >= 3))          # [B, N]
        close = (torch.cdist(x[:, r0:r0 + rows], x) < cutoff).any(0) & allowed
        bi, bj = torch.nonzero(close, as_tuple=True)
        found_i.append(bi + r0)
        found_j.append(bj)
    i = torch.cat(found_i) if found_i else idx[:0]
    j = torch.cat(found_j) if found_j else idx[:0]
    mask = torch.linalg.norm(x[:, i] - x[:, j], dim=-1) < cutoff
    return i, j, mask


def _step_ranges(d0, topo, limits, cis_allowed):
    """[F, N-1] lower and upper bound (Å) of every step: cis where allowed and shorter than ``cis_split``."""
    is_cis = cis_allowed & (d0 < limits.cis_split)
    lo = torch.where(is_cis, limits.cis[0], limits.trans[0]).to(d0.dtype)
    hi = torch.where(is_cis, limits.cis[1], limits.trans[1]).to(d0.dtype)
    return lo, hi


def _violations(x, topo, limits, cis_allowed, lo=None, hi=None, pairs=None) -> TraceViolations:
    f, n, _ = x.shape
    d = _spacing(x)
    if lo is None:
        lo, hi = _step_ranges(d, topo, limits, cis_allowed)
    spacing = ((d < lo) | (d > hi)) & topo.step
    theta = _angles(x)
    a_lo, a_hi = (math.radians(a) for a in limits.angle)
    angle = ((theta < a_lo) | (theta > a_hi)) & topo.angle
    contact = torch.zeros(f, n, dtype=torch.bool, device=x.device)
    i, j, mask = _contact_pairs(x, topo, limits.min_contact + 0.5) if pairs is None else pairs
    if len(i):
        dij = torch.linalg.norm(x[:, i] - x[:, j], dim=-1)
        hit = (mask & (dij < limits.min_contact)).to(x.dtype)
        count = x.new_zeros(f, n)
        count.index_add_(1, i, hit)
        count.index_add_(1, j, hit)
        contact = count > 0
    return TraceViolations(spacing, angle, contact)


def _cis_allowed(x, topo, limits, cis):
    """[F, N-1] bool: steps that may be cis peptides under the ``cis`` rule."""
    f = x.shape[0]
    everywhere = torch.ones(f, topo.step.shape[0], dtype=torch.bool, device=x.device)
    if cis == "any":
        return everywhere
    proline = topo.pro_next[None].expand(f, -1)
    if cis == "proline":
        return proline
    # auto: a trace with few violations when cis steps may be anywhere is atomistic and keeps its cis steps; in a
    # CG trace (many violations) a short step is a compressed trans peptide unless a proline follows
    share = _violations(x, topo, limits, everywhere).residues.to(x.dtype).mean(-1)
    atomistic = share <= limits.atomistic_share
    return torch.where(atomistic[:, None], everywhere, proline)


def trace_violations(ca, chain_index, restype=None, limits: TraceLimits = DEFAULT_LIMITS, cis="auto"):
    """Residues of ``ca`` [F, N, 3] (or [N, 3]) Å whose trace does not admit valid chemistry.

    chain_index [N] (or a ``ResidueLayout``, whose restype is then used); restype [N] (needed for the cis rule
    "proline"; without it every step may be cis). cis: "any" (a short step may be cis everywhere), "proline" (only
    before a proline), "auto" (anywhere in a frame with few other violations, ``limits.atomistic_share``, else
    only before a proline).
    Returns ``TraceViolations``.
    """
    chain_index, restype = _unpack_layout(chain_index, restype)
    x = torch.as_tensor(ca)
    x = x[None] if x.dim() == 2 else x
    x = x.to(torch.float64)
    if cis not in CIS_MODES:
        raise ValueError(f"cis must be one of {CIS_MODES}, not {cis!r}")
    topo = _topology(chain_index, restype, x.shape[1], x.device)
    return _violations(x, topo, limits, _cis_allowed(x, topo, limits, cis))


def _fallback_normal(line, index):
    """A unit vector perpendicular to ``line`` [F, K, 3], in one fixed plane, sign alternating with ``index`` [K]."""
    ref = torch.zeros_like(line)
    use_y = line[..., 0].abs() > 0.9
    ref[..., 0] = (~use_y).to(line.dtype)
    ref[..., 1] = use_y.to(line.dtype)
    n = torch.linalg.cross(line, ref)
    n = n / torch.linalg.norm(n, dim=-1, keepdim=True).clamp(min=1e-12)
    sign = 1.0 - 2.0 * (index % 2).to(line.dtype)
    return n * sign[:, None]


def _unit(v):
    return v / torch.linalg.norm(v, dim=-1, keepdim=True).clamp(min=1e-12)


def _bond_step(x, lo, hi, step_mask):
    """Jacobi projection of every step onto its distance range: (sum of moves [F, N, 3], count [F, N])."""
    f, n, _ = x.shape
    dv = x[:, 1:] - x[:, :-1]
    d = torch.linalg.norm(dv, dim=-1)
    target = torch.minimum(torch.maximum(d, lo + _MARGIN_DISTANCE), hi - _MARGIN_DISTANCE)
    excess = torch.where(step_mask & ((d < lo) | (d > hi)), d - target, torch.zeros_like(d))
    active = excess != 0
    e = dv / d[..., None].clamp(min=1e-9)
    move = 0.5 * excess[..., None] * e  # bead i towards i+1 when too long
    acc = x.new_zeros(f, n, 3)
    acc[:, :-1] += move
    acc[:, 1:] -= move
    cnt = x.new_zeros(f, n)
    cnt[:, :-1] += active
    cnt[:, 1:] += active
    return acc, cnt


def _angle_step(x, a_lo, a_hi, angle_mask, index):
    """Linearised projection of every interior virtual angle onto [a_lo, a_hi] rad: (moves [F, N, 3], count)."""
    f, n, _ = x.shape
    acc = x.new_zeros(f, n, 3)
    cnt = x.new_zeros(f, n)
    if n < 3:
        return acc, cnt
    u = x[:, :-2] - x[:, 1:-1]
    v = x[:, 2:] - x[:, 1:-1]
    lu = torch.linalg.norm(u, dim=-1).clamp(min=1e-9)
    lv = torch.linalg.norm(v, dim=-1).clamp(min=1e-9)
    uh, vh = u / lu[..., None], v / lv[..., None]
    cos = (uh * vh).sum(-1).clamp(-1.0, 1.0)
    theta = torch.acos(cos)
    target = theta.clamp(min=a_lo + _MARGIN_ANGLE, max=a_hi - _MARGIN_ANGLE)
    mask = angle_mask[:, 1:-1]
    excess = torch.where(mask & ((theta < a_lo) | (theta > a_hi)), theta - target, torch.zeros_like(theta))
    # moving end i along w_i (towards the other arm, perpendicular to its own) closes the angle by |move| / |u|
    w_i = vh - cos[..., None] * uh
    w_k = uh - cos[..., None] * vh
    straight = theta > math.pi - _STRAIGHT
    normal = _fallback_normal(_unit(x[:, 2:] - x[:, :-2]), index[1:-1])
    w_i = torch.where(straight[..., None], normal, _unit(w_i))
    w_k = torch.where(straight[..., None], normal, _unit(w_k))
    g_i = -w_i / lu[..., None]
    g_k = -w_k / lv[..., None]
    g_j = -(g_i + g_k)
    norm2 = (g_i.square().sum(-1) + g_j.square().sum(-1) + g_k.square().sum(-1)).clamp(min=1e-12)
    scale = (-excess / norm2)[..., None]
    active = (excess != 0).to(x.dtype)
    acc[:, :-2] += scale * g_i
    acc[:, 1:-1] += scale * g_j
    acc[:, 2:] += scale * g_k
    cnt[:, :-2] += active
    cnt[:, 1:-1] += active
    cnt[:, 2:] += active
    return acc, cnt


def _contact_step(x, i, j, mask, min_contact, index):
    """Push apart pairs closer than ``min_contact``: (moves [F, N, 3], count [F, N])."""
    f, n, _ = x.shape
    acc = x.new_zeros(f, n, 3)
    cnt = x.new_zeros(f, n)
    if len(i) == 0:
        return acc, cnt
    dv = x[:, j] - x[:, i]
    d = torch.linalg.norm(dv, dim=-1)
    target = min_contact + _MARGIN_DISTANCE
    short = mask & (d < min_contact)
    e = torch.where((d > 1e-6)[..., None], dv / d[..., None].clamp(min=1e-9),
                    _fallback_normal(x.new_tensor([0.0, 0.0, 1.0]).expand_as(dv), index[i]))
    move = torch.where(short, 0.5 * (target - d), torch.zeros_like(d))[..., None] * e
    acc.index_add_(1, i, -move)
    acc.index_add_(1, j, move)
    cnt.index_add_(1, i, short.to(x.dtype))
    cnt.index_add_(1, j, short.to(x.dtype))
    return acc, cnt


def _solve(x0, topo, limits, cis_allowed, max_iterations):
    """Constraint projection of the frames x0 [F, N, 3] (float64) until each frame is valid; frames stop moving
    as soon as they are (so a frame's result does not depend on the others in the batch)."""
    x = x0.clone()
    d0 = _spacing(x0)
    lo, hi = _step_ranges(d0, topo, limits, cis_allowed)
    # solved to slightly tighter limits, so that rounding to float32 cannot put a bead back outside
    lo, hi = lo + _SLACK_DISTANCE, hi - _SLACK_DISTANCE
    limits = replace(limits, angle=(limits.angle[0] + _SLACK_ANGLE, limits.angle[1] - _SLACK_ANGLE),
                     min_contact=limits.min_contact + _SLACK_DISTANCE)
    a_lo, a_hi = (math.radians(a) for a in limits.angle)
    step_mask = topo.step[None].expand_as(lo)
    angle_mask = topo.angle[None].expand(x.shape[0], -1)
    active = torch.ones(x.shape[0], dtype=torch.bool, device=x.device)
    i, j, pair_mask = _contact_pairs(x, topo, limits.min_contact + _CONTACT_SEARCH)
    searched_at = x.clone()
    for _ in range(max_iterations):
        if float(torch.linalg.norm(x - searched_at, dim=-1).max()) > 0.5 * _CONTACT_SEARCH:
            i, j, pair_mask = _contact_pairs(x, topo, limits.min_contact + _CONTACT_SEARCH)
            searched_at = x.clone()
        viol = _violations(x, topo, limits, cis_allowed, lo, hi, pairs=(i, j, pair_mask))
        active = active & viol.frames
        if not bool(active.any()):
            break
        for kind in ("bond", "angle", "contact"):
            if kind == "bond":
                acc, cnt = _bond_step(x, lo, hi, step_mask)
            elif kind == "angle":
                acc, cnt = _angle_step(x, a_lo, a_hi, angle_mask, topo.index)
            else:
                acc, cnt = _contact_step(x, i, j, pair_mask, limits.min_contact, topo.index)
            move = acc / cnt.clamp(min=1.0)[..., None]
            x = torch.where(active[:, None, None], x + move, x)
    return x, lo, hi


def refine_ca_trace(ca, chain_index, restype=None, *, max_rms=0.5, keep_beads=False,
                    limits: TraceLimits = DEFAULT_LIMITS, cis="auto", max_iterations=400) -> CATraceRefinement:
    """Move a CA trace to a nearby trace that admits valid chemistry; beads of valid frames are kept bit for bit.

    ca [F, N, 3] (or [N, 3]) Å, torch tensor or numpy array; chain_index [N] (contiguous chain labels, as
    ``ResidueLayout.chain_index``), or a ``ResidueLayout`` / ``LayoutTensors`` (its restype is then used);
    restype [N] (for the cis rule). max_rms: frames whose move is larger (Å RMS over beads) are returned refined but
    not ``accepted`` (``raise_if_refused`` turns that into one ``LatcpbInputError``). keep_beads: report only,
    return the input trace unchanged. limits, cis: what counts as valid (see ``TraceLimits``, ``trace_violations``).

    Frames that need a move are solved together by projecting, iteration after iteration, every step onto its
    trans or cis range, every virtual angle onto ``limits.angle`` (straight segments bend in a zigzag) and every
    close pair apart; only beads of violated constraints move, so the move stays local and small.
    Returns ``CATraceRefinement`` (ca, rms [F], max_move [F], changed [F], valid [F], accepted [F]).
    """
    chain_index, restype = _unpack_layout(chain_index, restype)
    if cis not in CIS_MODES:
        raise ValueError(f"cis must be one of {CIS_MODES}, not {cis!r}")
    inp = torch.as_tensor(ca)
    single = inp.dim() == 2
    x_in = inp[None] if single else inp
    if x_in.dim() != 3 or x_in.shape[-1] != 3:
        raise ValueError(f"ca has shape {tuple(inp.shape)}, expected [F, N, 3] or [N, 3]")
    finite = torch.isfinite(x_in).all(-1).all(-1)
    if not bool(finite.all()):
        raise LatcpbInputError(f"CA trace: non-finite coordinates in frame {int(torch.nonzero(~finite)[0, 0])}")
    x0 = x_in.to(torch.float64)
    f = x0.shape[0]
    topo = _topology(chain_index, restype, x0.shape[1], x0.device)
    cis_allowed = _cis_allowed(x0, topo, limits, cis)
    before = _violations(x0, topo, limits, cis_allowed)
    need = before.frames
    zeros = torch.zeros(f, dtype=torch.float64, device=x0.device)
    if keep_beads or not bool(need.any()):
        valid = ~need
        return _result(x_in, zeros, zeros.clone(), torch.zeros(f, dtype=torch.bool, device=x0.device), valid,
                       valid.clone(), before, max_rms, single)
    sel = torch.nonzero(need).flatten()
    solved, lo, hi = _solve(x0[sel], topo, limits, cis_allowed[sel], max_iterations)
    refined = solved.to(x_in.dtype)
    moved = (refined != x_in[sel]).any(-1, keepdim=True)
    out = x_in.clone()
    out[sel] = torch.where(moved, refined, x_in[sel])
    delta = torch.linalg.norm(out.to(torch.float64) - x0, dim=-1)  # [F, N] Å
    rms = delta.square().mean(-1).sqrt()
    max_move = delta.max(-1).values
    valid = torch.ones(f, dtype=torch.bool, device=x0.device)
    full_lo, full_hi = _step_ranges(_spacing(x0), topo, limits, cis_allowed)
    valid[sel] = ~_violations(out[sel].to(torch.float64), topo, limits, cis_allowed[sel], full_lo[sel],
                              full_hi[sel]).frames
    changed = (out != x_in).any(-1).any(-1)
    accepted = valid & (rms <= max_rms)
    return _result(out, rms, max_move, changed, valid, accepted, before, max_rms, single)


def _result(ca, rms, max_move, changed, valid, accepted, before, max_rms, single):
    """A ``CATraceRefinement``; for a single frame [N, 3] its per-frame figures are 0-d tensors."""
    if single:
        ca, rms, max_move, changed, valid, accepted = (t[0] for t in (ca, rms, max_move, changed, valid, accepted))
    return CATraceRefinement(ca, rms, max_move, changed, valid, accepted, before, max_rms)


ADMIT_TOLERANCE_DEG = 1.0   # N-CA-C / proline phi beyond its bound that the limiter's 5-degree grid may leave
ADMIT_ITERATIONS = 80
ADMIT_STEP = 0.05           # Å: the largest bead move of one iteration
ADMIT_LIMIT_WEIGHT = 10.0   # per Å (per rad) of a step (virtual angle) pushed beyond the CA limits ...
ADMIT_PROJECTION_ITERATIONS = 20   # ... which every step also restores by projection (``_solve``)


def admit_backbone(ca, lt, limits: TraceLimits = DEFAULT_LIMITS):
    """A CA trace that also admits a valid backbone: ca [F, N, 3] Å (within the CA limits, e.g. from
    ``refine_ca_trace``), lt ``LayoutTensors`` -> (trace [F, N, 3] float64 Å, admitted [F] bool).

    The CA limits do not see everything: a proline whose ring needs phi near -65 degrees, or a residue between two
    awkward steps, may find no peptide rotations that keep N-CA-C within bound (``backbone.inadmissible_excess``; on
    `val`, 1 residue in 2,682: a proline after a cis step). There, the beads within two residues of each such
    residue move by normalised gradient steps (at most ``ADMIT_STEP`` Å each) on that excess, each followed by the
    projection back within the CA limits, until none is left beyond ``ADMIT_TOLERANCE_DEG``; the rotations are
    found again every step. Frames without such a residue are returned bit for bit; a frame whose excess cannot be
    reduced within the CA limits keeps its input. admitted: no residue is left beyond the tolerance."""
    from latcpb.geometry.backbone import inadmissible_excess

    x0 = torch.as_tensor(ca).to(torch.float64)
    tol = math.radians(ADMIT_TOLERANCE_DEG)
    excess0 = inadmissible_excess(x0, lt)                                                   # [F, N] rad
    bad = excess0 > tol
    need = bad.any(-1)
    if not bool(need.any()):
        return x0, ~need
    topo = _topology(lt.chain_index.cpu().numpy(), lt.restype.cpu().numpy(), x0.shape[1], x0.device)
    sel = torch.nonzero(need).flatten()
    window = bad[sel].clone()
    for _ in range(2):                                                   # two residues either way, within a chain
        grown = window.clone()
        grown[:, 1:] |= window[:, :-1] & topo.step
        grown[:, :-1] |= window[:, 1:] & topo.step
        window = grown
    start = x0[sel]
    everywhere = torch.ones(len(sel), topo.step.shape[0], dtype=torch.bool, device=x0.device)  # steps keep class
    lo, hi = _step_ranges(_spacing(start), topo, limits, everywhere)
    a_lo, a_hi = (math.radians(a) for a in limits.angle)

    def excess_and_penalty(x):
        d, theta = _spacing(x), _angles(x)
        limit = ((torch.relu(lo - d) + torch.relu(d - hi)) * topo.step).sum(-1) + (
            (torch.relu(a_lo - theta) + torch.relu(theta - a_hi)) * topo.angle).sum(-1)
        return inadmissible_excess(x, lt), limit

    x = start.clone()
    active = torch.ones(len(sel), dtype=torch.bool, device=x.device)
    for _ in range(ADMIT_ITERATIONS):
        xg = x.clone().requires_grad_(True)
        excess, limit = excess_and_penalty(xg)
        active &= (excess.detach() > tol).any(-1)
        if not bool(active.any()):
            break
        grad, = torch.autograd.grad(excess.sum() + ADMIT_LIMIT_WEIGHT * limit.sum(), xg)
        grad = grad * window[..., None]
        scale = ADMIT_STEP / torch.linalg.norm(grad, dim=-1).amax(-1).clamp(min=1e-12)     # [f] Å per unit
        x = torch.where(active[:, None, None], x - grad * scale[:, None, None], x)
        x = _solve(x, topo, limits, everywhere, ADMIT_PROJECTION_ITERATIONS)[0]      # back within the CA limits
    with torch.no_grad():
        excess = inadmissible_excess(x, lt)
    ok = ~_violations(x, topo, limits, everywhere, lo, hi).frames
    better = ok & (excess.sum(-1) < excess0[sel].sum(-1))
    out = x0.clone()
    out[sel] = torch.where(better[:, None, None], x, start)
    admitted = ~need
    admitted[sel] = better & ~(excess > tol).any(-1)
    return out, admitted
