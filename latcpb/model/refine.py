"""Clash relief after decoding, restrained gradient steps against overlaps that keep chemistry valid.

- ``relieve_built_clashes`` (the default path): on a structure of the structure builder, every free degree of
  freedom (peptide rotations, chain-end torsions, chi1..chi4) is turned against the validity metric's severe
  overlaps, and (where decoding seeks the mode) against eclipsed chi and (phi, psi) outside the Ramachandran wells;
  the structure is rebuilt by the builder, so bonds, angles, rings and planar groups stay ideal.
- ``relieve_clashes`` (internal-coordinate decoder output, ``--idealize none`` models): side-chain torsions only. A
  chi turns its whole torsion group (``RESTYPE_TORSION_GROUP``: VAL CG1 and CG2 together, PHE CD1 and CD2 ...), so
  branch points, chirality and rings stay intact; prolines, the backbone, CB and the CA trace are never moved.
"""
from __future__ import annotations

import copy
import math
from functools import lru_cache
from typing import NamedTuple

import numpy as np
import torch

from latcpb.geometry import residue_constants as rc
from latcpb.geometry.internal_coords import internal_to_cartesian
from latcpb.model.cg_features import radius_graph
from latcpb.model.losses import clash_loss

RELIEF_CA_CUTOFF = 15.0  # Å: residue pairs further apart (CA-CA) cannot touch
RELIEF_MARGIN = 3.0      # Å: residue pairs whose side chains come closer than the hinge + this take part
CONTACT_CHUNK = 16384    # residue pairs per distance block ([16384, 15, 15] floats, 15 MB)
RELIEF_OVERLAP_MARGIN = 0.15  # Å: built-structure relief keeps pairs this far beyond the severe-overlap limit
RELIEF_PAIR_REACH = 1.0       # Å: pairs this close to their limit take part ...
RELIEF_PAIRS_EVERY = 10       # ... found again every this many steps
RELIEF_ANGLE_WEIGHT = 10.0    # per rad of N-CA-C (proline phi) beyond its bound: relief stays where it is kept
RELIEF_SETTLE_STEPS = 3       # last steps with the final build's N-CA-C limit applied
RELIEF_TORSION_WEIGHT = 0.25  # per fully eclipsed chi (rc.CHI_PERIODICITY), against Å of overlap
RELIEF_RAMA_WEIGHT = 0.1      # per 10 degrees of (phi, psi) outside what the Ramachandran wells allow
DISULFIDE_CAPTURE = 3.0       # Å: CYS SG pairs closer than this become disulfides under relief ...
DISULFIDE_BOND = 2.04         # Å: ... pulled to this SG-SG length (and CB-SG-SG to Engh & Huber)
RESCUE_MIN_GAIN = 0.1         # Å of overlap a rotamer swap or peptide turn must remove to be taken
RESCUE_ANGLE_WEIGHT = 10.0    # Å of overlap per rad of N-CA-C beyond its bound, when peptide turns are compared
S_SLOTS = rc.ATOMS_PER_RESIDUE


def relieve_clashes(ca, lt, internals, ctx, steps=10, lr=0.2, clash_distance=3.0, restraint=1.0,
                    ca_cutoff=RELIEF_CA_CUTOFF):
    """Decoded internals -> (cos_theta, sin_theta, cos_tau, sin_tau, theta) with side-chain torsions adjusted.

    ca [R, 3] Å; internals from ``Decoder``; ctx: ``CGContext`` of the same packed system. Deterministic. Residue
    pairs up to ``ca_cutoff`` Å apart (CA-CA) are checked: two long side chains (ARG, LYS, TRP) meet at ~14 Å.
    Loss: clash hinge (per residue) + restraint * mean over chi of (1 - cos(delta chi)).
    """
    cos_t, sin_t, cos_tau, sin_tau, theta = internals
    with torch.inference_mode(False), torch.enable_grad():
        lt = _plain_copy(lt)   # tensors made under inference_mode cannot take part in autograd
        last = ctx.last.clone()
        ca_, cos_t_, sin_t_ = ca.clone(), cos_t.clone(), sin_t.clone()
        tau0 = torch.atan2(sin_tau.clone(), cos_tau.clone())
        bond = lt.bond_lengths.to(ca_.dtype)
        src, dst = _contacts(ca_, lt, internal_to_cartesian(ca_[None], lt, bond, cos_t_[None], sin_t_[None],
                                                             torch.cos(tau0)[None], torch.sin(tau0)[None])[0],
                             ctx.packing, ca_cutoff, clash_distance + RELIEF_MARGIN)
        if src.numel() == 0:
            return internals
        group = torch.as_tensor(rc.RESTYPE_TORSION_GROUP, device=tau0.device)[lt.restype]      # [R, 15]
        group = torch.where((lt.restype == rc.RESTYPE_INDEX["PRO"])[:, None], -1, group)
        movable = (group >= 0).to(tau0.dtype)
        group = group.clamp(min=0)
        delta = torch.zeros(len(tau0), 4, dtype=tau0.dtype, device=tau0.device, requires_grad=True)  # [R, 4] rad
        opt = torch.optim.Adam([delta], lr=lr)
        everyone = torch.ones(len(ca_), dtype=torch.bool, device=ca.device)
        turn = lambda: torch.gather(delta, 1, group) * movable  # noqa: E731  [R, 15] rad
        for _ in range(steps):
            tau = tau0 + turn()
            xyz = internal_to_cartesian(ca_[None], lt, bond, cos_t_[None], sin_t_[None], torch.cos(tau)[None],
                                        torch.sin(tau)[None])[0]
            loss = clash_loss(xyz, lt, src, dst, last, everyone, clash_distance, ca_cutoff) \
                + restraint * (1 - torch.cos(turn())).mean()
            opt.zero_grad()
            loss.backward()
            opt.step()
        tau = (tau0 + turn()).detach()
    return cos_t, sin_t, torch.cos(tau), torch.sin(tau), theta


def _contacts(ca, lt, xyz, packing, ca_cutoff, distance):
    """Residue pairs (src > dst) [E] with CA-CA < ``ca_cutoff`` Å where a side-chain atom (beyond CB) of one comes
    closer than ``distance`` Å to any atom of the other in ``xyz`` [R, 15, 3] Å: the only pairs relief can change."""
    src, dst, _ = radius_graph(ca, packing, ca_cutoff)
    # a pair can only touch if its CA-CA distance is below the two residues' reaches (farthest atom from CA) + distance
    reach = (torch.linalg.norm(xyz - ca[:, None], dim=-1) * lt.atom_mask).amax(-1)         # [R] Å
    keep = (src > dst) & (torch.linalg.norm(ca[src] - ca[dst], dim=-1) < reach[src] + reach[dst] + distance)
    src, dst = src[keep], dst[keep]
    if src.numel() == 0:
        return src, dst
    side = torch.zeros(rc.ATOMS_PER_RESIDUE, dtype=torch.bool, device=ca.device)
    side[5:rc.OXT_SLOT] = True
    near = torch.zeros(len(src), dtype=torch.bool, device=ca.device)
    for k in range(0, len(src), CONTACT_CHUNK):                       # bounded memory on large packed systems
        a, b = src[k:k + CONTACT_CHUNK], dst[k:k + CONTACT_CHUNK]
        pair = lt.atom_mask[a][:, :, None] & lt.atom_mask[b][:, None, :] & (side[None, :, None] | side[None, None, :])
        d = torch.cdist(xyz[a], xyz[b], compute_mode="donot_use_mm_for_euclid_dist")     # [e, 15, 15]
        near[k:k + CONTACT_CHUNK] = d.masked_fill(~pair, float("inf")).flatten(1).min(1).values < distance
    return src[near], dst[near]


def relieve_built_clashes(xyz, lt, segment, steps=40, lr=0.1, restraint=1.0, margin=RELIEF_OVERLAP_MARGIN,
                          rescue_steps=0, topology=None, strain=True):
    """Clash relief on a structure of the structure builder: xyz [R, 15, 3] Å (packed, segments ``segment`` [R],
    equal copies of one layout or a single one) -> the same with the builder's degrees of freedom turned by Adam
    steps against overlaps, restrained to their given values.

    Every degree of freedom the builder leaves open moves: the peptide rotations about their CA-CA axes, the
    chain-end torsions and chi1..chi4 (not proline chi: its ring closes by its own solver). The structure is rebuilt
    by the structure builder at every step, so every bond length, angle, ring and planar group stays ideal
    and the CA trace is kept exactly. The overlaps are those of ``latcpb.metrics.validity.severe_overlaps`` (every
    heavy-atom pair more than three bonds apart, in one residue, neighbours and chain ends too, against their van
    der Waals sum; donor-acceptor pairs from 2.5 Å), each pushed ``margin`` Å beyond the severe limit. Every chi also
    carries its intrinsic torsion strain (``_torsion_strain``: sp3-sp3 bonds staggered, PHE/TYR rings perpendicular),
    so no side chain is left eclipsed between two rotamer wells (where a decoder's mean prediction falls), and
    every (phi, psi) is pulled into the region the Ramachandran wells allow (``_rama_strain``); ``strain=False``
    leaves both out (draws from a learned distribution, whose spread they would narrow). Two CYS whose
    SG lie within ``DISULFIDE_CAPTURE`` Å are pulled to an ideal disulfide instead. A frame whose overlaps would grow
    keeps its input. ``rescue_steps`` > 0: afterwards, side chains still in a severe overlap try other rotamers
    (``_rescue_rotamers``: chi1, chi2 turned by 0/120/240 degrees, the least overlap kept), then ``rescue_steps``
    more relief steps follow from there. Deterministic.
    """
    from latcpb.geometry.backbone import PeptideUnits, n_ca_c_excess, peptide_axes
    from latcpb.geometry.structure import Torsions, build_structure, extract_torsions

    with torch.inference_mode(False), torch.enable_grad():
        lt = _plain_copy(lt)
        xyz, segment = xyz.clone(), segment.clone()
        topology = topology if topology is not None else _relief_topology(lt, segment, xyz)
        pairs, limit = _overlap_candidates(xyz, topology, margin)
        bonded = topology.disulfides                                                        # [D, 2] SG, SG
        pro = lt.restype == rc.RESTYPE_INDEX["PRO"]
        chi_free = (torch.as_tensor(rc.RESTYPE_CHI_MASK, device=xyz.device)[lt.restype]
                    & ~pro[:, None]).to(xyz.dtype)                                          # [R, 4]
        period = torch.as_tensor(rc.RESTYPE_CHI_PERIODICITY, device=xyz.device)[lt.restype].to(xyz.dtype) * chi_free
        period = period if strain else torch.zeros_like(period)                            # no torsion strain
        if pairs.numel() == 0 and bonded.numel() == 0 and not bool((period > 0).any()):
            return xyz
        ca = xyz[:, 1]
        pep0, chi0, ends0 = extract_torsions(xyz, lt).angles()
        d_pep = torch.zeros_like(pep0, requires_grad=True)                                 # [R] rad
        d_chi = torch.zeros_like(chi0, requires_grad=True)                                 # [R, 4] rad
        d_ends = torch.zeros_like(ends0, requires_grad=True)                               # [R, 3] rad
        opt = torch.optim.Adam([d_pep, d_chi, d_ends], lr=lr)
        n_res = max(1, len(ca))

        units, axes = PeptideUnits(ca, lt), peptide_axes(ca, lt)                            # fixed: CA is
        ring = _proline_ring(lt)
        rama = (_rama_tables(xyz.device, xyz.dtype), _rama_classes(lt)) if strain else None

        def torsions():
            return Torsions.from_angles(pep0 + d_pep, chi0 + d_chi * chi_free, ends0 + d_ends)

        for step in range(steps + RELIEF_SETTLE_STEPS):
            # the last steps see the final build's N-CA-C limit, which may turn peptides (and side chains)
            flat = _trial_build(xyz, torsions(), lt, units, axes, ring, limit=step >= steps).reshape(-1, 3)
            if step and (step % RELIEF_PAIRS_EVERY == 0 or step == steps):   # pairs the moves brought close
                pairs, limit = _overlap_candidates(flat.detach().reshape(xyz.shape), topology, margin)
            d = torch.linalg.norm(flat[pairs[:, 0]] - flat[pairs[:, 1]], dim=-1)
            angle = RELIEF_ANGLE_WEIGHT * n_ca_c_excess(flat.reshape(xyz.shape), lt).sum() / n_res
            backbone = 0.0 if rama is None else RELIEF_RAMA_WEIGHT * _rama_strain(flat.reshape(xyz.shape), lt, rama[1],
                                                                                   rama[0]).sum()
            strained = (RELIEF_TORSION_WEIGHT * _torsion_strain(chi0 + d_chi, period).sum() + backbone
                        + torch.relu(limit - d).sum() + _disulfide_strain(flat, bonded)) / n_res
            loss = strained + angle + restraint * (
                (1 - torch.cos(d_pep)).mean() + (1 - torch.cos(d_chi * chi_free)).mean()
                + (1 - torch.cos(d_ends)).mean())
            opt.zero_grad()
            loss.backward()
            opt.step()
        with torch.no_grad():
            out = build_structure(ca, torsions(), lt)
            # a frame whose overlaps relief made worse (it can, where the trace leaves no room) keeps its input
            if rescue_steps > 0:
                swapped = _rescue_rotamers(out, lt, topology)
                if swapped is not None:
                    out = relieve_built_clashes(swapped, lt, segment, rescue_steps, lr, restraint, margin,
                                                topology=topology, strain=strain)
            worse = _overlap_score(out, topology) > _overlap_score(xyz, topology)          # [copies]
            n = topology.n
            return torch.where(worse.repeat_interleave(n)[:, None, None], xyz, out)


def _residue_overlap(xyz, topology):
    """Severe-overlap excess (Å, summed over its pairs) of every residue of the packed system [R]."""
    pairs, limit = _overlap_candidates(xyz, topology, 0.0, reach=0.0)
    flat = xyz.reshape(-1, 3)
    excess = (limit - torch.linalg.norm(flat[pairs[:, 0]] - flat[pairs[:, 1]], dim=-1)).clamp(min=0)
    per = torch.zeros(len(xyz), dtype=xyz.dtype, device=xyz.device)
    return per.index_add_(0, pairs[:, 0] // S_SLOTS, excess).index_add_(0, pairs[:, 1] // S_SLOTS, excess)


def _rescue_rotamers(xyz, lt, topology):
    """xyz [R, 15, 3] Å with every side chain still in a severe overlap (not proline) moved to the rotamer, among
    chi1 and chi2 turned by 0, 120 or 240 degrees, with the least overlap of its residue (all such residues tried
    together, combination by combination), after ``_rescue_peptides``; None when nothing overlaps."""
    from latcpb.geometry.sidechain import place_side_chains
    from latcpb.geometry.structure import chi_torsions

    if not bool((_residue_overlap(xyz, topology) > 0).any()):
        return None
    xyz = _rescue_peptides(xyz, lt, topology)
    bad = (_residue_overlap(xyz, topology) > 0) & (lt.restype != rc.RESTYPE_INDEX["PRO"])
    bad &= torch.as_tensor(rc.RESTYPE_CHI_MASK, device=xyz.device)[lt.restype][:, 0]
    chi = chi_torsions(xyz, lt)
    chi = torch.atan2(chi[..., 1], chi[..., 0])                                            # [R, 4] rad
    best, best_score = xyz, _residue_overlap(xyz, topology)
    turns = (0.0, 2 * math.pi / 3, 4 * math.pi / 3)
    for t1 in turns:
        for t2 in turns:
            if t1 == 0.0 and t2 == 0.0:
                continue
            trial_chi = chi.clone()
            trial_chi[bad, 0] += t1
            trial_chi[bad, 1] += t2
            trial = place_side_chains(xyz, lt.restype, torch.stack([trial_chi.cos(), trial_chi.sin()], -1))
            trial = torch.where(bad[:, None, None], trial, xyz)
            score = _residue_overlap(trial, topology)
            take = bad & (score < best_score - RESCUE_MIN_GAIN)
            best = torch.where(take[:, None, None], trial, best)
            best_score = torch.where(take, score, best_score)
    return best


def _rescue_peptides(xyz, lt, topology):
    """xyz [R, 15, 3] Å with every peptide next to a severe overlap turned about its CA-CA axis to the rotation,
    among turns of 60-300 degrees in 60-degree steps (and none), with the least overlap of its two residues plus
    ``RESCUE_ANGLE_WEIGHT`` x their N-CA-C excess beyond the builder's bound; side chains keep their chi."""
    from latcpb.geometry.backbone import PeptideUnits, chain_flags, n_ca_c_excess, peptide_axes
    from latcpb.geometry.structure import Torsions, build_structure, close_proline_rings, extract_torsions

    n = len(lt.restype)
    nxt = torch.arange(1, n + 1, device=xyz.device).clamp(max=n - 1)
    _, _, has_next = chain_flags(lt)
    bad_res = _residue_overlap(xyz, topology) > 0
    bad = has_next & (bad_res | bad_res[nxt])                                              # peptide i: i, i+1
    if not bool(bad.any()):
        return xyz
    tor = extract_torsions(xyz, lt)
    pep, chi, ends = tor.angles()

    def cost(built):
        per = _residue_overlap(built, topology) + RESCUE_ANGLE_WEIGHT * n_ca_c_excess(built, lt, fraction=1.0)
        return per + per[nxt]

    best_turn = torch.zeros_like(pep)
    best_cost = cost(xyz)
    ca, ring = xyz[:, 1], _proline_ring(lt)
    units, axes = PeptideUnits(ca, lt), peptide_axes(ca, lt)
    moved = bad | bad[(torch.arange(n, device=xyz.device) - 1).clamp(min=0)]          # residues a turn rebuilds
    for k in range(1, 6):
        turn = torch.where(bad, k * math.pi / 3, 0.0).to(pep.dtype)
        t = Torsions.from_angles(pep + turn, chi, ends)
        trial = close_proline_rings(_trial_build(xyz, t, lt, units, axes, ring), t.chi, lt, only=moved)
        c = cost(trial)
        take = bad & (c < best_cost - RESCUE_MIN_GAIN)
        best_turn = torch.where(take, turn, best_turn)
        best_cost = torch.where(take, c, best_cost)
    if not bool((best_turn != 0).any()):
        return xyz
    return build_structure(ca, Torsions.from_angles(pep + best_turn, chi, ends), lt)


def _proline_ring(lt):
    """[R, 15] bool: the CG, CD slots of every proline (kept from the input by ``_trial_build``)."""
    ring = torch.zeros_like(lt.atom_mask)
    ring[:, 5:7] = (lt.restype == rc.RESTYPE_INDEX["PRO"])[:, None]
    return ring


def _trial_build(xyz, torsions, lt, units, axes, ring, limit=False):
    """The structure of ``torsions`` on the CA of xyz [R, 15, 3] Å, cheaply: the proline rings (``ring``) kept from
    xyz instead of closed again, and no N-CA-C limit unless ``limit`` (a final ``build_structure`` applies both)."""
    from latcpb.geometry.sidechain import place_side_chains
    from latcpb.geometry.structure import build_backbone

    built = build_backbone(xyz[:, 1], torsions, lt, limit, units, axes)
    return torch.where(ring[..., None], xyz, place_side_chains(built, lt.restype, torsions.chi))


def _overlap_score(xyz, topology):
    """Sum of severe overlaps (Å beyond the limit of ``_overlap_candidates``) of every copy [copies]."""
    copies, n = topology.copies, topology.n
    return _residue_overlap(xyz, topology).view(copies, n).sum(1) / 2      # each pair counted at both residues


def _torsion_strain(chi, period):
    """Intrinsic strain of chi [R, 4] rad with profile ``period`` [R, 4] (``rc.RESTYPE_CHI_PERIODICITY``, 0: none):
    (1 + cos(period * chi)) / 2, 0 at the staggered (or ring-perpendicular) minima, 1 where eclipsed [R, 4]."""
    return torch.where(period > 0, (1 + torch.cos(period * chi)) / 2, torch.zeros_like(chi))


def _rama_tables(device, dtype):
    """[4, 36, 36]: for every 10-degree (phi, psi) bin of each Ramachandran class (``wells.RAMA_CLASSES`` order), its
    distance in bins to the nearest bin the wells (fitted on train) call allowed (periodic; 0 on allowed bins)."""
    return torch.as_tensor(_rama_distances(), dtype=dtype, device=device)


@lru_cache(maxsize=1)
def _rama_distances():
    """``_rama_tables`` as a numpy array [4, 36, 36] (computed once)."""
    from scipy.ndimage import distance_transform_edt

    from latcpb.metrics import wells as W

    table, out = W.load_wells()["rama"], []
    for name in W.RAMA_CLASSES:
        density, levels = table[name]
        allowed = density >= levels["allowed"]
        far = distance_transform_edt(~np.tile(allowed, (3, 3))) if allowed.any() else np.zeros((108, 108))
        out.append(far[36:72, 36:72])                          # the middle tile: periodic distances
    return np.stack(out)


def _rama_classes(lt):
    """[R] Ramachandran class of every residue (``wells.rama_class``: GLY, PRO, pre-proline or general)."""
    from latcpb.metrics import validity as V
    from latcpb.metrics import wells as W

    restype = lt.restype.cpu().numpy()
    following = W.following_restype(restype, V.chain_predecessors(lt.chain_index.cpu().numpy()))
    return torch.as_tensor(W.rama_class(restype, following), device=lt.restype.device)


def _rama_strain(xyz, lt, cls, far):
    """How far (in 10-degree bins, [R]) each residue's (phi, psi) of xyz [R, 15, 3] Å lies from the region its
    Ramachandran class ``cls`` [R] allows (``_rama_tables`` ``far``, bilinear between bin centres); 0 inside, and
    where phi or psi is undefined (chain ends)."""
    from latcpb.geometry.backbone import chain_flags
    from latcpb.geometry.nerf import dihedral

    n = len(lt.restype)
    first, _, has_next = chain_flags(lt)
    idx = torch.arange(n, device=xyz.device)
    prv, nxt = (idx - 1).clamp(min=0), (idx + 1).clamp(max=n - 1)
    n_a, ca, c = xyz[:, 0], xyz[:, 1], xyz[:, 2]
    phi, psi = dihedral(c[prv], n_a, ca, c), dihedral(n_a, ca, c, n_a[nxt])
    u = (torch.rad2deg(phi) + 180.0) / 10.0 - 0.5                  # grid coordinate: bin centres at integers
    v = (torch.rad2deg(psi) + 180.0) / 10.0 - 0.5
    i0, j0 = torch.floor(u), torch.floor(v)
    fu, fv = u - i0, v - j0
    i0, j0 = i0.long() % 36, j0.long() % 36
    i1, j1 = (i0 + 1) % 36, (j0 + 1) % 36
    g, base = far.reshape(-1), cls * 36 * 36
    val = ((1 - fu) * (1 - fv) * g[base + i0 * 36 + j0] + fu * (1 - fv) * g[base + i1 * 36 + j0]
           + (1 - fu) * fv * g[base + i0 * 36 + j1] + fu * fv * g[base + i1 * 36 + j1])
    return val * (has_next & ~first)


def _disulfide_strain(flat, bonded):
    """Deviation of the disulfides ``bonded`` [D, 2] (flat SG slots; CB is the slot before) from Engh & Huber:
    |SG-SG - 2.04| Å + |CB-SG-SG - 104.2°| (rad) at both ends, summed."""
    from latcpb.geometry.nerf import bond_angle
    from latcpb.metrics.validity import angle_table

    if bonded.numel() == 0:
        return flat.sum() * 0.0
    ideal = math.radians(angle_table()["disulfide"]["CB-SG-SG"][0])
    a, b = flat[bonded[:, 0]], flat[bonded[:, 1]]
    strain = (torch.linalg.norm(a - b, dim=-1) - DISULFIDE_BOND).abs()
    strain = strain + (bond_angle(flat[bonded[:, 0] - 1], a, b) - ideal).abs()
    return (strain + (bond_angle(flat[bonded[:, 1] - 1], b, a) - ideal).abs()).sum()


class ReliefTopology(NamedTuple):
    """What relief needs of a packed layout of ``copies`` equal copies of ``n`` residues (``_relief_topology``).

    validity: ``ValidityTopology`` of one copy; near_excluded [n*15, 30] bool: local flat slot a, slot b - 15 *
    (a // 15) of the same or next residue -> the pair is at most three bonds apart (``validity.excluded`` as a
    table); other_excluded: sorted keys a * n*15 + b (a < b) of the other excluded pairs and of the disulfide SG
    pairs; disulfides [D, 2]: disulfide SG pairs (flat slots of the packed system)."""

    validity: object
    copies: int
    n: int
    near_excluded: object
    other_excluded: object
    disulfides: torch.Tensor


def _relief_topology(lt, segment, xyz) -> ReliefTopology:
    """``ReliefTopology`` of a packed layout made of equal copies (frames of one system; otherwise the whole packed
    system is one copy). Two CYS whose SG lie closer than ``DISULFIDE_CAPTURE`` Å in xyz [R, 15, 3] Å form a
    disulfide: relief then pulls it to ideal geometry instead of pushing its SG apart."""

    from latcpb.metrics import validity as V

    n_total = len(lt.restype)
    copies = int(segment.max()) + 1 if n_total else 1
    n = n_total // copies
    restype = lt.restype.cpu().numpy()
    if n * copies != n_total or not (restype.reshape(copies, n) == restype[:n]).all():
        copies, n = 1, n_total
    present = lt.atom_mask[:n].cpu().numpy()
    topo = V.validity_topology(restype[:n], present, V.chain_predecessors(lt.chain_index[:n].cpu().numpy()))
    coords = xyz.detach().reshape(copies, n, S_SLOTS, 3).cpu().numpy()
    keys, bonded = [], []
    for k in range(copies):
        pairs = V.find_disulfides(coords[k], present, restype[:n], DISULFIDE_CAPTURE)
        sg = pairs * S_SLOTS + 5
        keys.append(sg[:, 0] * (n * S_SLOTS) + sg[:, 1])
        bonded.append(sg + k * n * S_SLOTS)
    bonded = torch.as_tensor(np.concatenate(bonded).reshape(-1, 2), dtype=torch.long, device=xyz.device)
    first, second = np.divmod(topo.excluded, n * S_SLOTS)
    offset = second - (first // S_SLOTS) * S_SLOTS
    near = offset < 2 * S_SLOTS
    table = np.zeros((n * S_SLOTS, 2 * S_SLOTS), dtype=bool)
    table[first[near], offset[near]] = True
    other = np.unique(np.concatenate([topo.excluded[~near], *keys]))
    return ReliefTopology(topo, copies, n, table, other, bonded)


def _overlap_candidates(xyz, topology, margin, reach=RELIEF_PAIR_REACH):
    """Atom pairs [P, 2] (flat slots of the packed system xyz [R, 15, 3] Å) that relief keeps apart, and their least
    distance [P] Å: the van der Waals sum less ``SEVERE_OVERLAP``, plus ``margin`` (donor-acceptor pairs:
    ``HBOND_OVERLAP_DISTANCE`` plus ``margin``). Pairs are those of the validity metric (more than three bonds
    apart) now within their least distance + ``reach`` Å, within each copy (``ReliefTopology``)."""
    from scipy.spatial import cKDTree

    from latcpb.metrics import validity as V

    topo, copies, n = topology.validity, topology.copies, topology.n
    radius = 2 * max(V.VDW_RADII.values()) - V.SEVERE_OVERLAP + margin + reach
    coords = xyz.detach().reshape(copies, n * S_SLOTS, 3).cpu().numpy().astype(np.float64)[:, topo.atoms]
    # all copies in one tree, each shifted along x beyond the reach of the others
    span = float(np.ptp(coords[..., 0])) + 2 * radius + 1.0 if coords.size else 1.0
    shifted = (coords + (span * np.arange(copies))[:, None, None] * np.array([1.0, 0.0, 0.0])).reshape(-1, 3)
    found = cKDTree(shifted).query_pairs(radius, output_type="ndarray")
    f0, f1 = np.ascontiguousarray(found[:, 0]), np.ascontiguousarray(found[:, 1])
    m = len(topo.atoms)
    i, j = topo.atoms[f0 % m], topo.atoms[f1 % m]
    a, b = np.minimum(i, j), np.maximum(i, j)
    hbond = (topo.donor[a] & topo.acceptor[b]) | (topo.donor[b] & topo.acceptor[a])
    least = np.where(hbond, V.HBOND_OVERLAP_DISTANCE, topo.radii[a] + topo.radii[b] - V.SEVERE_OVERLAP) + margin
    step = np.take(shifted, f0, axis=0) - np.take(shifted, f1, axis=0)
    keep = np.einsum("ij,ij->i", step, step) < (least + reach) ** 2
    offset = b - (a // S_SLOTS) * S_SLOTS
    close = offset < 2 * S_SLOTS
    keep[close] &= ~topology.near_excluded[a[close], offset[close]]
    keep[keep] &= ~V.in_sorted(a[keep] * (n * S_SLOTS) + b[keep], topology.other_excluded)
    pairs = np.stack([a[keep], b[keep]], 1) + (f0[keep] // m * (n * S_SLOTS))[:, None]
    return (torch.as_tensor(pairs, dtype=torch.long, device=xyz.device),
            torch.as_tensor(least[keep], dtype=xyz.dtype, device=xyz.device))


def _plain_copy(lt):
    """A copy of LayoutTensors whose tensors can take part in autograd (tensors made under inference_mode cannot)."""
    lt = copy.copy(lt)
    for name, value in vars(lt).items():
        if torch.is_tensor(value):
            setattr(lt, name, value.clone())
        elif isinstance(value, (list, tuple)) and value and all(torch.is_tensor(v) for v in value):
            setattr(lt, name, type(value)(v.clone() for v in value))
    return lt
