"""Backbone heavy atoms on a CA trace from one rotation per peptide: pure, batched, differentiable torch functions.

By construction (exact whatever the rotations):
- every peptide (CA_i, C_i, O_i, N_i+1, CA_i+1) is a planar unit, trans (omega 180) or cis (omega 0, only where
  CA_i-CA_i+1 < ``CIS_CA_DISTANCE``), with Engh & Huber bond lengths; the CA beads are kept exactly;
- chain ends: the first residue's N, the last residue's C and its carboxylate (O, OXT: planar, CA-C-O = CA-C-OXT
  118.3, O-C-OXT 123.4 degrees) at ideal bond lengths and N-CA-C angle, each with one free torsion;
- CB at its ideal bond length, in the fixed direction (residue type) of the basis made by CA->N and CA->C, so
  every residue is L.
Not by construction, bounded instead:
- CA-C-N and C-N-CA absorb a CA-CA distance that differs from the ideal unit's (3.80 Å trans): both move by
  sigma^2-weighted shares of one parameter (the least change in sigma units), CA-C-O and O-C-N share what the
  angle sum at C needs (360 degrees, planar). Within ``UNIT_SIGMA_LIMIT`` sigma this covers CA-CA 3.63-3.97 Å (trans)
  and 2.71-3.01 Å (cis); beyond it the unit stays at the limit and the C-N bond absorbs the rest (a trace to
  correct first: ``latcpb.geometry.ca_trace``).
- N-CA-C of an interior residue depends on two peptide rotations: ``limit_n_ca_c`` turns rotations (the least total
  turn, exact dynamic programming along the chain) so that every N-CA-C lies within ``N_CA_C_SIGMA_LIMIT`` sigma of
  Engh & Huber, and proline phi within ``PROLINE_PHI_RANGE_DEG`` (its ring closes with good angles only there);
  N-CA-CB and C-CA-CB then deviate by about half as much.
"""
from __future__ import annotations

import math

import torch
import torch.nn.functional as F

from latcpb.geometry import residue_constants as rc
from latcpb.geometry import rigid_groups as rg
from latcpb.geometry.nerf import bond_angle, dihedral, place_atom, virtual_neighbour

CIS_CA_DISTANCE = 3.3      # Å: CA_i-CA_i+1 below this is cis (train set: cis 2.74-3.36, median 3.0; trans >= 3.53)
UNIT_SIGMA_LIMIT = 3.5     # largest deviation of CA-C-N / C-N-CA from Engh & Huber, in sigma, to fit a CA-CA distance
N_CA_C_SIGMA_LIMIT = 3.0   # N-CA-C of interior residues is kept within this many sigma of Engh & Huber
REFERENCE_MIN_NORM = 0.5   # Å: a trace vector this short (perpendicular to a CA-CA axis) is too straight to use
LIMIT_STEP_DEG = 5.0       # turn resolution of ``limit_n_ca_c``
NEWTON_STEPS = 8
PROLINE_PHI_RANGE_DEG = (-95.0, -40.0)   # the pyrrolidine ring admits phi -63 +- 15 (Ramachandran, MolProbity)
PROLINE_PHI_WEIGHT = 0.01    # where a trace admits no proline phi in range with N-CA-C in bound, N-CA-C wins
_PRO = rc.RESTYPE_INDEX["PRO"]


def chain_flags(lt):
    """(first [N], last [N], has_next [N]) bool from the layout's chain index."""
    ci = lt.chain_index
    has_next = torch.zeros_like(ci, dtype=torch.bool)
    has_next[:-1] = ci[1:] == ci[:-1]
    first = torch.ones_like(has_next)
    first[1:] = ci[1:] != ci[:-1]
    return first, ~has_next, has_next


def _table(name, restype, dtype):
    """(mean, sigma) rad [N] of a backbone angle for residue types [N]."""
    t = torch.as_tensor(rg.BACKBONE_ANGLES[name], device=restype.device, dtype=dtype)[restype]
    return t[..., 0], t[..., 1]


def _bond(name, restype, dtype):
    return torch.as_tensor(rg.BACKBONE_BONDS[name], device=restype.device, dtype=dtype)[restype]


def _rot2(v, angle):
    """2-D vectors v [..., 2] turned by angle [...] rad."""
    c, s = torch.cos(angle), torch.sin(angle)
    return torch.stack([c * v[..., 0] - s * v[..., 1], s * v[..., 0] + c * v[..., 1]], -1)


class PeptideUnits:
    """Ideal peptide units between CA_i and CA_i+1 (index i of the residue before the bond), all [..., N] (values at
    chain-last residues are unused). ``local`` [..., N, 3, 2] Å: C_i, O_i, N_i+1 in the peptide frame (x along
    CA_i->CA_i+1 from CA_i, y in the peptide plane); ``cis`` [..., N] bool; ``alpha``, ``beta`` CA-C-N and C-N-CA
    rad."""

    def __init__(self, ca, lt):
        dtype = ca.dtype
        rt = lt.restype
        nxt = torch.arange(1, len(rt) + 1, device=rt.device).clamp(max=len(rt) - 1)
        rt_next = rt[nxt]
        d = torch.linalg.norm(ca[..., nxt, :] - ca, dim=-1)                               # [..., N] Å
        self.cis = d < CIS_CA_DISTANCE
        b1, b3 = _bond("CA-C", rt, dtype), _bond("N-CA", rt_next, dtype)
        b2 = torch.where(rt_next == rc.RESTYPE_INDEX["PRO"], 1.341, rc.BACKBONE_BONDS["C-N"]).to(dtype)
        a0, sa = _table("CA-C-N", rt, dtype)
        g0, sg = _table("CA-C-O", rt, dtype)
        o0, so = _table("O-C-N", rt, dtype)
        be0, sb = _table("C-N-CA", rt_next, dtype)
        wa, wb = sa ** 2 / (sa ** 2 + sb ** 2) * 2, sb ** 2 / (sa ** 2 + sb ** 2) * 2
        s_max = UNIT_SIGMA_LIMIT * torch.minimum(sa / wa, sb / wb)                     # |s| keeping both in bounds
        sign = torch.where(self.cis, 1.0, -1.0).to(dtype)                            # CA_i+1 side of the C-N bond

        def points(s):  # C at 0, C->N along +x, CA_i on +y
            alpha, beta = a0 + wa * s, be0 + wb * s
            ca_i = b1[..., None] * torch.stack([torch.cos(alpha), torch.sin(alpha)], -1)
            n = torch.stack([b2, torch.zeros_like(b2)], -1).expand_as(ca_i)
            ca_j = n + b3[..., None] * torch.stack([-torch.cos(beta), sign * torch.sin(beta)], -1)
            return alpha, beta, ca_i, n, ca_j

        s = torch.zeros_like(d)
        for _ in range(NEWTON_STEPS):   # D(s) = CA-CA distance of the unit, increasing in s (trans and cis)
            alpha, beta, ca_i, n, ca_j = points(s)
            delta = ca_j - ca_i
            dist = torch.linalg.norm(delta, dim=-1)
            dca_i = b1[..., None] * wa[..., None] * torch.stack([-torch.sin(alpha), torch.cos(alpha)], -1)
            dca_j = b3[..., None] * wb[..., None] * torch.stack([torch.sin(beta), sign * torch.cos(beta)], -1)
            slope = ((delta * (dca_j - dca_i)).sum(-1) / dist).abs().clamp(min=1e-3)
            s = torch.maximum(torch.minimum(s - (dist - d) / slope, s_max), -s_max)
        alpha, beta, ca_i, n, ca_j = points(s)
        self.alpha, self.beta = alpha, beta
        # O: in the plane, on the far side from CA_i; the angle sum at C (360) shared by CA-C-O and O-C-N
        residual = 2 * math.pi - alpha - g0 - o0
        o_c_n = o0 + residual * so ** 2 / (sg ** 2 + so ** 2)
        o = rc.BACKBONE_BONDS["C-O"] * torch.stack([torch.cos(o_c_n), -torch.sin(o_c_n)], -1)
        # peptide frame: origin CA_i, x towards CA_i+1 of the unit
        e = F.normalize(ca_j - ca_i, dim=-1)
        f = torch.stack([-e[..., 1], e[..., 0]], -1)
        local = []
        for p in (torch.zeros_like(ca_i), o, n):
            q = p - ca_i
            local.append(torch.stack([(q * e).sum(-1), (q * f).sum(-1)], -1))
        # where the unit cannot span the trace, N keeps its place relative to CA_i+1 (the C-N bond absorbs the rest)
        unit_d = torch.linalg.norm(ca_j - ca_i, dim=-1)
        local[2] = local[2] + torch.stack([d - unit_d, torch.zeros_like(d)], -1)
        self.local = torch.stack(local, -2)                                           # [..., N, 3, 2]
        self.distance = d


def peptide_axes(ca, lt):
    """Axes of every peptide frame: x (CA_i -> CA_i+1) and the reference y, z of rotation 0, each [..., N, 3].

    Reference y: the part of CA_i-1 - CA_i perpendicular to x; on a chain's first peptide (or where the trace is
    too straight there) CA_i+2 - CA_i+1; else a fixed perpendicular (``nerf.virtual_neighbour``).
    """
    n = len(lt.restype)
    idx = torch.arange(n, device=ca.device)
    first, last, has_next = chain_flags(lt)
    nxt, nxt2, prv = (idx + 1).clamp(max=n - 1), (idx + 2).clamp(max=n - 1), (idx - 1).clamp(min=0)
    x = F.normalize(ca[..., nxt, :] - ca, dim=-1, eps=1e-8)

    def perp(v):
        return v - (v * x).sum(-1, keepdim=True) * x

    back = perp(ca[..., prv, :] - ca)
    ahead = perp(ca[..., nxt2, :] - ca[..., nxt, :])
    fixed = perp(virtual_neighbour(ca, ca[..., nxt, :]) - ca)
    ok_back = (~first)[..., None] & (torch.linalg.norm(back, dim=-1, keepdim=True) > REFERENCE_MIN_NORM)
    has_next2 = has_next & has_next[nxt]
    ok_ahead = has_next2[..., None] & (torch.linalg.norm(ahead, dim=-1, keepdim=True) > REFERENCE_MIN_NORM)
    y = torch.where(ok_back, back, torch.where(ok_ahead, ahead, fixed))
    y = F.normalize(y, dim=-1, eps=1e-8)
    return x, y, torch.cross(x, y, dim=-1)


def place_peptides(ca, units, axes, rotation):
    """C_i, O_i, N_i+1 [..., N, 3, 3] Å of every peptide from its rotation (cos, sin) [..., N, 2]."""
    x, y, z = axes
    u = rotation[..., 0:1] * y + rotation[..., 1:2] * z                             # in-plane direction [..., N, 3]
    return ca[..., None, :] + units.local[..., 0:1] * x[..., None, :] + units.local[..., 1:2] * u[..., None, :]


def _angle_at(vertex, p, q):
    return bond_angle(p, vertex, q)


def n_ca_c_excess(xyz, lt, fraction=0.9):
    """How far (rad, [..., N]) each interior residue's N-CA-C lies beyond ``fraction`` of the bound that
    ``limit_n_ca_c`` enforces, plus a proline's phi beyond ``PROLINE_PHI_RANGE_DEG``; 0 inside. xyz [..., N, 15, 3]
    Å. A differentiable penalty that keeps gradient moves of the peptide rotations where ``limit_n_ca_c`` leaves
    them unchanged."""
    n = len(lt.restype)
    first, _, has_next = chain_flags(lt)
    prv = (torch.arange(n, device=xyz.device) - 1).clamp(min=0)
    mean, sigma = _table("N-CA-C", lt.restype, xyz.dtype)
    n_a, ca, c = xyz[..., 0, :], xyz[..., 1, :], xyz[..., 2, :]
    excess = torch.relu((bond_angle(n_a, ca, c) - mean).abs() - fraction * N_CA_C_SIGMA_LIMIT * sigma)
    phi = dihedral(c[..., prv, :], n_a, ca, c)
    lo, hi = (math.radians(v) for v in PROLINE_PHI_RANGE_DEG)
    excess = excess + torch.where(lt.restype == _PRO, torch.relu(lo + 0.1 - phi) + torch.relu(phi - hi + 0.1), 0.0)
    return excess * (has_next & ~first)


def limit_n_ca_c(ca, lt, units, axes, rotation):
    """Peptide rotations [..., N, 2] turned so that N-CA-C of every interior residue lies within
    ``N_CA_C_SIGMA_LIMIT`` sigma of Engh & Huber, with the least total turn: exact dynamic programming along each
    chain over turns of ``LIMIT_STEP_DEG`` steps (residue i couples peptides i-1 and i). Rotations that already
    satisfy every bound are returned unchanged. Gradients pass straight through the turns."""
    n = len(lt.restype)
    first, last, has_next = chain_flags(lt)
    idx = torch.arange(n, device=ca.device)
    prv = (idx - 1).clamp(min=0)
    mean, sigma = _table("N-CA-C", lt.restype, ca.dtype)
    bound = N_CA_C_SIGMA_LIMIT * sigma - math.radians(0.01)
    interior = has_next & ~first
    rot = rotation.detach()
    atoms = place_peptides(ca, units, axes, rot)
    current = bond_angle(atoms[..., prv, 2, :], ca, atoms[..., 0, :])
    bad = (current - mean).abs() > bound
    phi = dihedral(atoms[..., prv, 0, :], atoms[..., prv, 2, :], ca, atoms[..., 0, :])
    lo, hi = (math.radians(v) for v in PROLINE_PHI_RANGE_DEG)
    bad |= (lt.restype == _PRO) & ((phi < lo) | (phi > hi))
    if not bool(bad[..., interior].any()):
        return rotation
    x, y, z = axes
    steps = torch.arange(-180.0, 180.0, LIMIT_STEP_DEG, dtype=ca.dtype, device=ca.device)
    grid = torch.deg2rad(steps[torch.argsort(steps.abs(), stable=True)])                # [G] 0 first
    turn_cost = torch.rad2deg(grid.abs())                                              # degrees
    cand = _rot2(rot[..., None, :], grid)                                              # [..., N, G, 2]
    u = cand[..., 0:1] * y[..., None, :] + cand[..., 1:2] * z[..., None, :]            # [..., N, G, 3]
    loc = units.local
    nxt = (idx + 1).clamp(max=n - 1)
    c_dir = F.normalize(loc[..., None, 0, 0:1] * x[..., None, :] + loc[..., None, 0, 1:2] * u, dim=-1)
    n_dir = F.normalize(loc[..., None, 2, 0:1] * x[..., None, :] + loc[..., None, 2, 1:2] * u
                        + (ca - ca[..., nxt, :])[..., None, :], dim=-1)               # N_i+1 - CA_i+1
    cos_low, cos_high = torch.cos(mean - bound), torch.cos(mean + bound)               # [N]
    is_pro = (lt.restype == _PRO).tolist()
    # only chains with a residue out of bounds are searched (the others keep their rotations: zero turns)
    out_of_bounds = (bad & interior).reshape(-1, n).any(0)
    chain_bad = torch.zeros(int(lt.chain_index.max()) + 1, dtype=torch.bool, device=ca.device)
    chain_bad.index_put_((lt.chain_index,), out_of_bounds, accumulate=True)
    search = (has_next & chain_bad[lt.chain_index]).tolist()
    is_first = first.tolist()
    score, back = [], []
    for i in range(n):
        if not search[i]:
            score.append(None)
            back.append(None)
            continue
        if is_first[i]:
            score.append(turn_cost.expand(*rot.shape[:-2], -1))
            back.append(None)
            continue
        cos = n_dir[..., i - 1, :, :] @ c_dir[..., i, :, :].transpose(-1, -2)          # [..., G(a), G(g)]
        violation = torch.relu(cos - cos_low[i]) + torch.relu(cos_high[i] - cos)      # 0 inside the bound
        if is_pro[i]:   # the ring fixes proline's phi: C_i-1 must sit where the ring's CD lets it
            c_prev = ca[..., i - 1, None, :] + c_dir[..., i - 1, :, :] * rc.BACKBONE_BONDS["CA-C"]
            n_i = ca[..., i, None, :] + n_dir[..., i - 1, :, :] * rg.BACKBONE_BONDS["N-CA"][_PRO]
            c_i = ca[..., i, None, :] + c_dir[..., i, :, :] * rc.BACKBONE_BONDS["CA-C"]
            phi = dihedral(c_prev[..., :, None, :], n_i[..., :, None, :], ca[..., i, None, None, :],
                           c_i[..., None, :, :])
            lo, hi = (math.radians(v) for v in PROLINE_PHI_RANGE_DEG)
            violation = violation + PROLINE_PHI_WEIGHT * (torch.relu(lo - phi) + torch.relu(phi - hi))
        total = score[i - 1][..., :, None] + 1e5 * violation
        best, arg = total.min(-2)
        score.append(best + turn_cost)
        back.append(arg)
    choice = torch.zeros(rot.shape[:-1], dtype=torch.long, device=ca.device)          # [..., N]
    state = None
    for i in range(n - 1, -1, -1):
        if score[i] is None:
            state = None
            continue
        if state is None:                                                              # a chain's last peptide
            state = score[i].argmin(-1)
        choice[..., i] = state
        state = None if back[i] is None else torch.gather(back[i], -1, state[..., None])[..., 0]
    turn = grid[choice] * has_next
    return _rot2(rotation, turn.detach())


def inadmissible_excess(ca, lt):
    """How far (rad, [..., N]) each interior residue of the trace ca [..., N, 3] Å stays beyond its N-CA-C bound
    (``N_CA_C_SIGMA_LIMIT`` sigma) or, for a proline, beyond ``PROLINE_PHI_RANGE_DEG``, with the peptide rotations
    that ``limit_n_ca_c`` finds (from rotation 0): 0 where ideal peptide units on this trace admit valid backbone
    chemistry. Differentiable in ca with the rotations held (to move a trace that admits none)."""
    n = len(lt.restype)
    first, _, has_next = chain_flags(lt)
    prv = (torch.arange(n, device=ca.device) - 1).clamp(min=0)
    fixed = ca.detach()
    zero = torch.stack([torch.ones_like(fixed[..., 0]), torch.zeros_like(fixed[..., 0])], -1)    # [..., N, 2]
    rotation = limit_n_ca_c(fixed, lt, PeptideUnits(fixed, lt), peptide_axes(fixed, lt), zero).detach()
    pep = place_peptides(ca, PeptideUnits(ca, lt), peptide_axes(ca, lt), rotation)           # C, O, N+1
    n_atom, c_atom = pep[..., prv, 2, :], pep[..., 0, :]
    mean, sigma = _table("N-CA-C", lt.restype, ca.dtype)
    excess = torch.relu((bond_angle(n_atom, ca, c_atom) - mean).abs() - N_CA_C_SIGMA_LIMIT * sigma)
    phi = dihedral(pep[..., prv, 0, :], n_atom, ca, c_atom)
    lo, hi = (math.radians(v) for v in PROLINE_PHI_RANGE_DEG)
    excess = excess + torch.where(lt.restype == _PRO, torch.relu(lo - phi) + torch.relu(phi - hi), 0.0)
    return excess * (has_next & ~first)


def place_chain_ends(ca, lt, n_atom, c_atom, ends):
    """Chain-end atoms from their free torsions ``ends`` [..., N, 3, 2] (cos, sin): psi of a first residue places its
    N; phi and psi of a last residue its C and (O, OXT). n_atom, c_atom [..., N, 3] Å hold the peptide-placed atoms
    (N_i+1 / C_i); returns (N [..., N, 3], C [..., N, 3], O_end [..., N, 3], OXT [..., N, 3]) Å."""
    n = len(lt.restype)
    first, last, _ = chain_flags(lt)
    idx = torch.arange(n, device=ca.device)
    prv, nxt = (idx - 1).clamp(min=0), (idx + 1).clamp(max=n - 1)
    dtype = ca.dtype
    mean, _ = _table("N-CA-C", lt.restype, dtype)
    cos_a, sin_a = torch.cos(mean), torch.sin(mean)
    e = F.normalize(ends, dim=-1, eps=1e-8)
    # a proline's phi stays where its ring closes with good angles
    phi = torch.atan2(e[..., 1, 1], e[..., 1, 0])
    lo, hi = (math.radians(v) for v in PROLINE_PHI_RANGE_DEG)
    phi = torch.where(lt.restype == _PRO, phi.clamp(lo, hi), phi)
    e = torch.cat([e[..., :1, :], torch.stack([torch.cos(phi), torch.sin(phi)], -1)[..., None, :], e[..., 2:, :]], -2)
    # first residue: N from (N_1, C_0, CA_0), torsion N_0-CA_0-C_0-N_1 = psi_0
    n_first = place_atom(n_atom[..., nxt, :], c_atom, ca, _bond("N-CA", lt.restype, dtype), cos_a, sin_a,
                         e[..., 0, 0], e[..., 0, 1])
    n_out = torch.where(first[:, None], n_first, n_atom)
    # last residue: C from (C_-1, N, CA), torsion = phi
    c_last = place_atom(c_atom[..., prv, :], n_out, ca, _bond("CA-C", lt.restype, dtype), cos_a, sin_a,
                        e[..., 1, 0], e[..., 1, 1])
    c_out = torch.where(last[:, None], c_last, c_atom)
    t = math.radians(rg.C_TERMINUS_ANGLES_DEG["CA-C-O"][0])
    cos_t, sin_t = torch.full_like(mean, math.cos(t)), torch.full_like(mean, math.sin(t))
    psi = e[..., 2, :]
    o_end = place_atom(n_out, ca, c_out, _bond("C-O", lt.restype, dtype), cos_t, sin_t, -psi[..., 0], -psi[..., 1])
    oxt = place_atom(n_out, ca, c_out, _bond("C-OXT", lt.restype, dtype), cos_t, sin_t, psi[..., 0], psi[..., 1])
    return n_out, c_out, o_end, oxt


def place_cb(n_atom, ca, c_atom, restype):
    """CB [..., N, 3] Å in the ideal direction of its residue type in the basis (bisector, difference, normal) of
    the unit vectors CA->N and CA->C: L by construction."""
    u = F.normalize(n_atom - ca, dim=-1, eps=1e-8)
    v = F.normalize(c_atom - ca, dim=-1, eps=1e-8)
    bis = F.normalize(u + v, dim=-1, eps=1e-8)
    dif = F.normalize(u - v, dim=-1, eps=1e-8)
    nor = F.normalize(torch.cross(u, v, dim=-1), dim=-1, eps=1e-8)
    k = torch.as_tensor(rg.RESTYPE_CB_BASIS, device=ca.device, dtype=ca.dtype)[restype]   # [N, 3]
    length = torch.as_tensor(rg.BACKBONE_BONDS["CA-CB"], device=ca.device, dtype=ca.dtype)[restype]
    direction = k[:, 0:1] * bis + k[:, 1:2] * dif + k[:, 2:3] * nor
    return ca + length[:, None] * direction


def peptide_rotations(xyz, lt, units=None, axes=None):
    """Inverse of ``place_peptides``: the rotation (cos, sin) [..., N, 2] that best overlays each ideal unit's C_i,
    O_i, N_i+1 on those of xyz [..., N, 15, 3] Å (least squares about the CA-CA axis; weight = distance from it)."""
    ca = xyz[..., 1, :]
    units = units or PeptideUnits(ca, lt)
    x, y, z = axes or peptide_axes(ca, lt)
    n = len(lt.restype)
    nxt = torch.arange(1, n + 1, device=xyz.device).clamp(max=n - 1)
    atoms = torch.stack([xyz[..., 2, :], xyz[..., 3, :], xyz[..., nxt, 0, :]], -2)      # [..., N, 3, 3]
    q = atoms - ca[..., None, :]
    w = units.local[..., 1]                                                            # signed distance [..., N, 3]
    cy, cz = ((q * y[..., None, :]).sum(-1) * w).sum(-1), ((q * z[..., None, :]).sum(-1) * w).sum(-1)
    return F.normalize(torch.stack([cy, cz], -1) + torch.tensor([1e-9, 0.0], dtype=xyz.dtype, device=xyz.device),
                       dim=-1)


def end_torsions(xyz, lt):
    """Inverse of ``place_chain_ends``: (psi of the residue, phi, psi) as (cos, sin) [..., N, 3, 2] from xyz."""
    n = len(lt.restype)
    idx = torch.arange(n, device=xyz.device)
    prv, nxt = (idx - 1).clamp(min=0), (idx + 1).clamp(max=n - 1)
    n_a, ca, c, o = (xyz[..., k, :] for k in range(4))
    psi0 = dihedral(n_a, ca, c, xyz[..., nxt, 0, :])
    phi = dihedral(c[..., prv, :], n_a, ca, c)
    psi_end = dihedral(n_a, ca, c, o) + math.pi
    angles = torch.stack([psi0, phi, psi_end], -1)
    return torch.stack([torch.cos(angles), torch.sin(angles)], -1)
