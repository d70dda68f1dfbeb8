"""Rule-based geometry: the baseline generator (``--model geometric``) and the idealiser of generated output.

Baseline: backbone N and C from the CA trace with internal coordinates binned by the local CA-trace shape (mean
values of their chain position at chain ends), every peptide then made an ideal planar unit (trans, or cis where
the CA trace is cis), O from the backbone torsion psi, side chains in the most frequent rotamer of the training data;
these rules decide the peptide rotations and chi, and the structure builder (``latcpb.geometry.structure``) builds
the final atoms from them, so the output is valid chemistry by construction.
Angles, fixed torsions, rotamers and the trans peptide unit come from ``geometry/data/ideal_geometry.json``
(``python -m latcpb.tools.fit_ideal_geometry``); bond lengths from the Engh & Huber table. Deterministic: every
sample is the same structure.
"""
from __future__ import annotations

import math

import numpy as np
import torch
import torch.nn.functional as F

from latcpb.geometry import residue_constants as rc
from latcpb.geometry.backbone import CIS_CA_DISTANCE
from latcpb.geometry.rigid_groups import load_ideal_geometry  # noqa: F401  (re-exported)
from latcpb.geometry.internal_coords import LayoutTensors, cartesian_to_internal, internal_to_cartesian_angles
from latcpb.geometry.nerf import bond_angle, dihedral
from latcpb.model.cg_features import chain_ends

NONE, FIXED, CHI, OFFSET, PSI = -1, 0, 1, 2, 3
LAST_RESIDUE_PSI_DEG = 140.0  # psi of a C-terminal residue, which no CA trace determines (extended)
ANGLE_EDGES_DEG = (90.0, 100.0, 110.0, 120.0, 130.0)  # virtual CA angle bins (6) for the backbone table
N_DIHEDRAL_BINS = 18                                    # virtual CA dihedral bins of 20 degrees
CIS_PEPTIDE_ANGLES_DEG = (116.2, 121.7)  # CA-C-N, C-N-CA of the ideal cis unit (Engh & Huber)


def ca_trace_descriptors(ca, chain_index):
    """Local CA-trace shape of every residue i, used to look up its backbone N and C.

    ca [..., N, 3] Å; chain_index [N] (torch long). Returns the virtual angle at i, the virtual dihedrals
    (i-2, i-1, i, i+1) for N_i and (i-1, i, i+1, i+2) for C_i, all [..., N] rad, and ``ok`` [N] bool where
    residues i-2 ... i+2 all lie in i's chain.
    """
    n = ca.shape[-2]
    idx = torch.arange(n, device=ca.device)
    shifted = {k: (idx + k).clamp(0, n - 1) for k in (-2, -1, 1, 2)}
    ok = torch.ones(n, dtype=torch.bool, device=ca.device)
    for k, j in shifted.items():
        ok &= (idx + k >= 0) & (idx + k < n) & (chain_index[j] == chain_index)
    p = {k: ca[..., j, :] for k, j in shifted.items()}
    angle = bond_angle(p[-1], ca, p[1])
    dihedral_n = dihedral(p[-2], p[-1], ca, p[1])
    dihedral_c = dihedral(p[-1], ca, p[1], p[2])
    return angle, dihedral_n, dihedral_c, ok


def peptide_frames(ca_i, ca_next, toward):
    """Orthonormal frame of the peptide between CA_i and CA_i+1: x along CA-CA, y perpendicular to it towards the
    point ``toward`` (N_i+1 when fitting the unit), ([..., 3] each). Returns (x, y, z, origin = CA_i).
    """
    x = F.normalize(ca_next - ca_i, dim=-1)
    v = toward - ca_i
    y = F.normalize(v - (v * x).sum(-1, keepdim=True) * x, dim=-1)
    return x, y, torch.cross(x, y, dim=-1), ca_i


def backbone_bins(angle, dihedral_value):
    """Bin indices (angle bin, dihedral bin) of ``ca_trace_descriptors`` values (torch, rad)."""
    edges = torch.tensor(ANGLE_EDGES_DEG, dtype=angle.dtype, device=angle.device)
    a_bin = torch.bucketize(torch.rad2deg(angle).contiguous(), edges)
    d_bin = ((dihedral_value + math.pi) / (2 * math.pi) * N_DIHEDRAL_BINS).long().clamp(0, N_DIHEDRAL_BINS - 1)
    return a_bin, d_bin


def _tables(ideal):
    """Arrays [20, 15] of theta (rad), torsion kind, torsion value (rad), sibling slot; anchors [20, 3, 2, 2] rad;
    backbone bins [6, 18, 2, 2] rad (NaN where empty); trans peptide unit [5] Å (C x, y, z, N x, y)."""
    n, s = rc.N_RESTYPES, rc.ATOMS_PER_RESIDUE
    theta = np.full((n, s), math.radians(110.0))
    kind = np.full((n, s), NONE, dtype=np.int64)  # NONE: N, CA, C (anchors) and empty slots
    value = np.zeros((n, s))
    sibling = np.zeros((n, s), dtype=np.int64)
    anchors = np.zeros((n, 3, 2, 2))
    for r, name in enumerate(rc.RESTYPES):
        entry = ideal["residues"][name]
        names = rc.slot_names(name)
        for p, pos in enumerate(("first", "interior", "last")):
            for a, atom in enumerate(("N", "C")):
                anchors[r, p, a] = np.radians(entry["anchors"][atom][pos])
        for k, atom in enumerate(names):
            spec = entry["atoms"].get(atom)
            if spec is None:
                continue
            theta[r, k] = math.radians(spec["theta_deg"])
            torsion = spec["torsion"]
            if torsion == "psi":
                kind[r, k], value[r, k] = PSI, math.radians(ideal["psi_to_O_offset_deg"])
            elif torsion.startswith("chi"):
                kind[r, k], value[r, k] = CHI, math.radians(entry["rotamer_deg"][int(torsion[3:]) - 1])
            elif torsion.startswith("offset:"):
                kind[r, k], value[r, k] = OFFSET, math.radians(spec["offset_deg"])
                sibling[r, k] = names.index(torsion.split(":", 1)[1])
            else:
                kind[r, k], value[r, k] = FIXED, math.radians(spec["tau_deg"])
    binned = np.full((len(ANGLE_EDGES_DEG) + 1, N_DIHEDRAL_BINS, 2, 2), np.nan)
    for a, row in enumerate(ideal.get("backbone_bins", {}).get("table", [])):
        for d, cell in enumerate(row):
            for k, atom in enumerate(("N", "C")):
                if cell.get(atom) is not None:
                    binned[a, d, k] = np.radians(cell[atom])
    unit = ideal["trans_peptide"]
    peptide = np.array(unit["C"] + unit["N"])
    return theta, kind, value, sibling, anchors, binned, peptide


def _rotate2d(v, angle):
    """2-D vector v turned by ``angle`` rad (counter-clockwise)."""
    return np.array([v[0] * np.cos(angle) - v[1] * np.sin(angle), v[0] * np.sin(angle) + v[1] * np.cos(angle)])


def _cis_peptide_unit():
    """(C x, y, z, N x, y) Å of an ideal planar cis peptide (omega 0; Engh & Huber lengths and angles) in the frame
    of ``peptide_frames`` (x along CA_i-CA_i+1, N_i+1 on the +y side), like the fitted trans unit."""
    ca_c, c_n, n_ca = rc.BACKBONE_BONDS["CA-C"], rc.BACKBONE_BONDS["C-N"], rc.BACKBONE_BONDS["N-CA"]
    ca_c_n, c_n_ca = np.radians(CIS_PEPTIDE_ANGLES_DEG)
    ca_i, c = np.zeros(2), np.array([ca_c, 0.0])
    n = c + c_n * _rotate2d(np.array([-1.0, 0.0]), -ca_c_n)     # angle CA_i-C-N, N above the x axis

    def side(p):  # which side of the C-N bond p lies on
        return np.sign((n - c)[0] * (p - c)[1] - (n - c)[1] * (p - c)[0])

    # omega 0: CA_i+1 on the same side of the C-N bond as CA_i
    candidates = [n + n_ca * _rotate2d((c - n) / c_n, sign * c_n_ca) for sign in (1.0, -1.0)]
    ca_next = next(p for p in candidates if side(p) == side(ca_i))
    x = (ca_next - ca_i) / np.linalg.norm(ca_next - ca_i)
    y = np.array([-x[1], x[0]])
    if (n - ca_i) @ y < 0:
        y = -y
    return np.array([c @ x, c @ y, 0.0, n @ x, n @ y])


def _peptide_oxygen(unit, angle_ca_c_o):
    """Local (x, y, z) Å of O_i in a peptide unit's frame: C=O 1.231 Å, in plane, on the side away from N_i+1."""
    c = np.array(unit[:2])
    n = np.array(unit[3:5])
    u = -c / np.linalg.norm(c)
    best = None
    for sign in (1.0, -1.0):
        o = c + rc.BACKBONE_BONDS["C-O"] * _rotate2d(u, sign * angle_ca_c_o)
        if best is None or np.linalg.norm(o - n) > np.linalg.norm(best - n):
            best = o
    return np.array([best[0], best[1], 0.0])


def aromatic_ring_tables(ideal=None):
    """Ideal geometry of the planar aromatic rings (PHE, TYR, TRP, HIS: every atom beyond CG), arrays [20, 15]:
    ``ring`` bool; ``theta`` rad; ``fixed`` bool (torsion = ``value``); ``offset`` bool (torsion = torsion of slot
    ``sibling`` + ``value``); ``value`` rad. Atoms with neither flag (chi2) keep their torsion."""
    theta, kind, value, sibling, *_ = _tables(ideal or load_ideal_geometry())
    ring = rc.RESTYPE_AROMATIC_RING
    return {"ring": ring, "theta": theta, "fixed": ring & (kind == FIXED), "offset": ring & (kind == OFFSET),
            "value": value, "sibling": sibling}


class _IdealGeometry:
    """The fitted tables on one device, and the operations that impose them."""

    def __init__(self, device="cpu", ideal=None):
        self.device = torch.device(device)
        arrays = _tables(ideal or load_ideal_geometry())
        self._theta, self._kind, self._value, self._sibling, self._anchors, self._binned, self._peptide = (
            torch.as_tensor(a, device=self.device) for a in arrays)
        angle_ca_c_o = float(arrays[0][0, 3])
        self._peptide_o = torch.as_tensor(_peptide_oxygen(arrays[-1], angle_ca_c_o), device=self.device)
        cis = _cis_peptide_unit()
        self._cis_peptide = torch.as_tensor(cis, device=self.device)
        self._cis_peptide_o = torch.as_tensor(_peptide_oxygen(cis, angle_ca_c_o), device=self.device)

    def _sibling_offsets(self, tau, restype):
        """Torsions [B, N, 15] with every OFFSET atom set to its sibling's torsion plus the fitted offset."""
        kind = self._kind[restype]
        sibling_tau = torch.gather(tau, -1, self._sibling[restype].expand_as(tau))
        return torch.where(kind == OFFSET, sibling_tau + self._value[restype].to(tau.dtype), tau)

    def _set_peptide_units(self, xyz, lt: LayoutTensors, theta, tau, use_oxygen):
        """Set the N and C internal coordinates (in ``theta``/``tau`` [B, N, 15], in place) so that every peptide
        (i, i+1) of a chain is an ideal planar unit, turned about CA_i-CA_i+1 to where ``xyz`` has it: the fitted
        trans unit, or the ideal cis unit where the CA trace is cis (CA_i-CA_i+1 < 3.3 Å).

        The unit's +y side points towards N_i+1 (and, trans, away from C_i) of ``xyz``; ``use_oxygen``: O_i of
        ``xyz`` joins C_i and N_i+1 in setting the orientation.
        """
        n = xyz.shape[-3]
        has_next = torch.zeros(n, dtype=torch.bool, device=xyz.device)
        has_next[:-1] = lt.chain_index[1:] == lt.chain_index[:-1]
        nxt = torch.nonzero(has_next).flatten()
        if not len(nxt):
            return
        ca = xyz[..., 1, :]
        cis = torch.linalg.norm(ca[..., nxt + 1, :] - ca[..., nxt, :], dim=-1) < CIS_CA_DISTANCE   # [B, P]
        unit = torch.where(cis[..., None], self._cis_peptide.to(xyz.dtype), self._peptide.to(xyz.dtype))  # [B, P, 5]
        oxygen = torch.where(cis[..., None], self._cis_peptide_o.to(xyz.dtype), self._peptide_o.to(xyz.dtype))
        zero = torch.zeros_like(unit[..., 4])
        # orientation that best overlays the unit's C, O and N on those of xyz (O, far from the axis, weighs most)
        axis = F.normalize(ca[..., nxt + 1, :] - ca[..., nxt, :], dim=-1)
        members = [(xyz[..., nxt, 2, :], unit[..., 0:3]),
                   (xyz[..., nxt + 1, 0, :], torch.stack([unit[..., 3], unit[..., 4], zero], -1))]
        if use_oxygen:
            members.append((xyz[..., nxt, 3, :], oxygen))
        toward = 0
        for atom, local in members:
            p = atom - ca[..., nxt, :]
            toward = toward + local[..., 1:2] * p + local[..., 2:3] * torch.cross(p, axis, dim=-1)
        x, y, z, origin = peptide_frames(ca[..., nxt, :], ca[..., nxt + 1, :], ca[..., nxt, :] + toward)
        placed = xyz.clone()
        placed[..., nxt, 2, :] = origin + unit[..., 0:1] * x + unit[..., 1:2] * y + unit[..., 2:3] * z
        placed[..., nxt + 1, 0, :] = origin + unit[..., 3:4] * x + unit[..., 4:5] * y
        _, new_theta, new_tau = cartesian_to_internal(placed, lt)
        for slot, rows in ((2, nxt), (0, nxt + 1)):
            theta[..., rows, slot] = new_theta[..., rows, slot]
            tau[..., rows, slot] = new_tau[..., rows, slot]


class GeometryIdealizer:
    """Valid chemistry for generated heavy atoms, keeping what a generator decides: the structure is rebuilt by the
    structure builder (``latcpb.geometry.structure``) from its own degrees of freedom (peptide rotations about the
    CA-CA axes, chi1-chi4, chain-end torsions), so bond lengths, angles, rings, planar groups, ideal trans units (cis
    where CA_i-CA_i+1 < 3.3 Å), closed proline rings and L chirality hold by construction; the CA trace and the chi
    angles are kept (proline's move to the nearest good closed ring). ``level`` "standard" and "full" are the same
    since the builder imposes every rigid group. ``__call__(xyz [B, N, 15, 3] Å, lt) -> [B, N, 15, 3] Å``.
    """

    def __init__(self, device="cpu", ideal=None, level="standard"):
        if level not in ("standard", "full"):
            raise ValueError(f"unknown idealisation level {level!r}")
        self.level = level
        self.device = torch.device(device)

    def __call__(self, xyz, lt: LayoutTensors):
        return rebuild(xyz, lt)


def rebuild(xyz, lt: LayoutTensors):
    """xyz [..., N, 15, 3] Å -> the structure builder's output from the degrees of freedom of xyz (CA kept)."""
    from latcpb.geometry.structure import build_structure, extract_torsions

    return build_structure(xyz[..., 1, :], extract_torsions(xyz, lt), lt)


class GeometricGenerator(_IdealGeometry):
    """Deterministic rule-based backmapping; implements ``latcpb.model.generator.Generator``."""

    name = "geometric"

    def generate(self, ca, lt: LayoutTensors, samples=1, rng=None, **options):
        """CA [B, N, 3] Å -> [B * samples, N, 15, 3] Å (identical samples)."""
        dtype = ca.dtype
        n = ca.shape[-2]
        first, last = chain_ends(lt)
        position = torch.where(first, 0, torch.where(last, 2, 1))        # [N] first / interior / last
        theta = self._theta[lt.restype].to(dtype).clone()                 # [N, 15]
        anchors = self._anchors[lt.restype, position].to(dtype)          # [N, 2, 2]
        theta[:, 0], theta[:, 2] = anchors[:, 0, 0], anchors[:, 1, 0]
        kind = self._kind[lt.restype]
        value = self._value[lt.restype].to(dtype)
        tau = torch.where(kind == OFFSET, 0.0, value)
        tau[:, 0], tau[:, 2] = anchors[:, 0, 1], anchors[:, 1, 1]
        tau = tau.expand(*ca.shape[:-2], n, rc.ATOMS_PER_RESIDUE).clone()  # [B, N, 15]
        theta = theta.expand_as(tau).clone()
        # interior residues: N and C from the table binned by the local CA-trace shape
        angle, dihedral_n, dihedral_c, ok = ca_trace_descriptors(ca, lt.chain_index)
        for k, (slot, dih) in enumerate(((0, dihedral_n), (2, dihedral_c))):
            a_bin, d_bin = backbone_bins(angle, dih)
            cell = self._binned[a_bin, d_bin, k].to(dtype)               # [B, N, 2]
            use = ok & torch.isfinite(cell[..., 0])
            theta[..., slot] = torch.where(use, cell[..., 0], theta[..., slot])
            tau[..., slot] = torch.where(use, cell[..., 1], tau[..., slot])
        bond = lt.bond_lengths.to(dtype)
        xyz = internal_to_cartesian_angles(ca, lt, bond, theta, tau)
        self._set_peptide_units(xyz, lt, theta, tau, use_oxygen=False)
        # O follows psi, which needs N of the next residue: place the backbone, then O and its sibling OXT
        xyz = internal_to_cartesian_angles(ca, lt, bond, theta, tau)
        n_next = torch.cat([xyz[..., 1:, 0, :], xyz[..., -1:, 0, :]], dim=-2)
        psi = dihedral(xyz[..., 0, :], xyz[..., 1, :], xyz[..., 2, :], n_next)
        psi = torch.where(last, math.radians(LAST_RESIDUE_PSI_DEG), psi)
        tau = self._sibling_offsets(torch.where(kind == PSI, psi[..., None] + value, tau), lt.restype)
        xyz = internal_to_cartesian_angles(ca, lt, bond, theta, tau)
        # the rules decide the peptide rotations and chi; the structure builder makes the chemistry valid
        return rebuild(xyz, lt).repeat_interleave(samples, dim=0)
