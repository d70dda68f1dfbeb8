"""Rule-based geometry: the baseline generator (``--model geometric``) and the idealiser of generated output.

Baseline: backbone N and C from the CA trace with internal coordinates binned by the local CA-trace shape (mean
values of their chain position at chain ends), every peptide then made an ideal trans unit, O from the backbone
torsion psi, side chains in the most frequent rotamer of the training data. Angles, fixed torsions, rotamers and the
peptide unit come from ``geometry/data/ideal_geometry.json`` (``python -m latcpb.tools.fit_ideal_geometry``); bond
lengths from the Engh & Huber table. Deterministic: every sample is the same structure.
"""
from __future__ import annotations

import json
import math
from importlib import resources

import numpy as np
import torch
import torch.nn.functional as F

from latcpb.geometry import residue_constants as rc
from latcpb.geometry.internal_coords import LayoutTensors, cartesian_to_internal, internal_to_cartesian_angles
from latcpb.geometry.nerf import bond_angle, dihedral
from latcpb.model.cg_features import chain_ends

NONE, FIXED, CHI, OFFSET, PSI = -1, 0, 1, 2, 3
LAST_RESIDUE_PSI_DEG = 140.0  # psi of a C-terminal residue, which no CA trace determines (extended)
ANGLE_EDGES_DEG = (90.0, 100.0, 110.0, 120.0, 130.0)  # virtual CA angle bins (6) for the backbone table
N_DIHEDRAL_BINS = 18                                    # virtual CA dihedral bins of 20 degrees


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


def load_ideal_geometry():
    """The fitted table (dict) shipped in ``latcpb/geometry/data/ideal_geometry.json``."""
    text = resources.files("latcpb").joinpath("geometry", "data", "ideal_geometry.json").read_text()
    return json.loads(text)


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


def _peptide_oxygen(unit, angle_ca_c_o):
    """Local (x, y, z) Å of O_i in the trans peptide frame: C=O 1.231 Å, in plane, on the side away from N_i+1."""
    c = np.array(unit[:2])
    n = np.array(unit[3:5])
    u = -c / np.linalg.norm(c)
    best = None
    for sign in (1.0, -1.0):
        a = sign * angle_ca_c_o
        o = c + rc.BACKBONE_BONDS["C-O"] * np.array([u[0] * np.cos(a) - u[1] * np.sin(a),
                                                    u[0] * np.sin(a) + u[1] * np.cos(a)])
        if best is None or np.linalg.norm(o - n) > np.linalg.norm(best - n):
            best = o
    return np.array([best[0], best[1], 0.0])


class _IdealGeometry:
    """The fitted tables on one device, and the operations that impose them."""

    def __init__(self, device="cpu", ideal=None):
        self.device = torch.device(device)
        arrays = _tables(ideal or load_ideal_geometry())
        self._theta, self._kind, self._value, self._sibling, self._anchors, self._binned, self._peptide = (
            torch.as_tensor(a, device=self.device) for a in arrays)
        self._peptide_o = torch.as_tensor(_peptide_oxygen(arrays[-1], float(arrays[0][0, 3])), device=self.device)

    def _sibling_offsets(self, tau, restype):
        """Torsions [B, N, 15] with every OFFSET atom set to its sibling's torsion plus the fitted offset."""
        kind = self._kind[restype]
        sibling_tau = torch.gather(tau, -1, self._sibling[restype].expand_as(tau))
        return torch.where(kind == OFFSET, sibling_tau + self._value[restype].to(tau.dtype), tau)

    def _set_trans_peptides(self, xyz, lt: LayoutTensors, theta, tau, skip_proline, use_oxygen):
        """Set the N and C internal coordinates (in ``theta``/``tau`` [B, N, 15], in place) so that every peptide
        (i, i+1) of a chain is an ideal trans unit, turned about CA_i-CA_i+1 to where ``xyz`` has it.

        The unit's +y side points towards N_i+1 and away from C_i of ``xyz`` (both lie near the CA-CA axis).
        ``skip_proline`` leaves X-Pro peptides as they are (they may be cis); ``use_oxygen``: O_i of ``xyz`` joins
        C_i and N_i+1 in setting the orientation.
        """
        n = xyz.shape[-3]
        has_next = torch.zeros(n, dtype=torch.bool, device=xyz.device)
        has_next[:-1] = lt.chain_index[1:] == lt.chain_index[:-1]
        if skip_proline:
            has_next[:-1] &= lt.restype[1:] != rc.RESTYPE_INDEX["PRO"]
        nxt = torch.nonzero(has_next).flatten()
        if not len(nxt):
            return
        ca = xyz[..., 1, :]
        unit = self._peptide.to(xyz.dtype)
        # orientation that best overlays the unit's C, O and N on those of xyz (O, far from the axis, weighs most)
        axis = F.normalize(ca[..., nxt + 1, :] - ca[..., nxt, :], dim=-1)
        members = [(xyz[..., nxt, 2, :], unit[0:3]),
                   (xyz[..., nxt + 1, 0, :], torch.stack([unit[3], unit[4], torch.zeros_like(unit[4])]))]
        if use_oxygen:
            members.append((xyz[..., nxt, 3, :], self._peptide_o.to(xyz.dtype)))
        toward = 0
        for atom, local in members:
            p = atom - ca[..., nxt, :]
            toward = toward + local[1] * p + local[2] * torch.cross(p, axis, dim=-1)
        x, y, z, origin = peptide_frames(ca[..., nxt, :], ca[..., nxt + 1, :], ca[..., nxt, :] + toward)
        placed = xyz.clone()
        placed[..., nxt, 2, :] = origin + unit[0] * x + unit[1] * y + unit[2] * z
        placed[..., nxt + 1, 0, :] = origin + unit[3] * x + unit[4] * y
        _, new_theta, new_tau = cartesian_to_internal(placed, lt)
        for slot, rows in ((2, nxt), (0, nxt + 1)):
            theta[..., rows, slot] = new_theta[..., rows, slot]
            tau[..., rows, slot] = new_tau[..., rows, slot]


class GeometryIdealizer(_IdealGeometry):
    """Imposes ideal local geometry on generated heavy atoms, keeping what a generator decides.

    Kept: the CA trace, the placement of every peptide plane about its CA-CA axis, phi/psi-dependent O, the side-chain
    torsions chi1..chi4. Imposed: bond lengths (Engh & Huber), trans peptide units (X-Pro left as generated), and with
    ``rigid_groups`` the bond angles and torsions of rigid groups (aromatic rings, guanidinium, carboxylate and amide
    planes, branch points, CB chirality). ``__call__(xyz [B, N, 15, 3] Å, lt) -> [B, N, 15, 3] Å``.
    """

    def __init__(self, device="cpu", ideal=None, rigid_groups=True):
        super().__init__(device, ideal)
        self.rigid_groups = rigid_groups

    def __call__(self, xyz, lt: LayoutTensors):
        _, theta, tau = cartesian_to_internal(xyz, lt)
        if self.rigid_groups:
            kind = self._kind[lt.restype]
            rigid = (kind == FIXED) | (kind == OFFSET)
            theta = torch.where(rigid, self._theta[lt.restype].to(xyz.dtype), theta)
            tau = self._sibling_offsets(torch.where(kind == FIXED, self._value[lt.restype].to(xyz.dtype), tau),
                                        lt.restype)
        theta, tau = theta.clone(), tau.clone()
        self._set_trans_peptides(xyz, lt, theta, tau, skip_proline=True, use_oxygen=True)
        return internal_to_cartesian_angles(xyz[..., 1, :], lt, lt.bond_lengths.to(xyz.dtype), theta, tau)


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
        self._set_trans_peptides(xyz, lt, theta, tau, skip_proline=False, use_oxygen=False)
        # O follows psi, which needs N of the next residue: place the backbone, then O and its sibling OXT
        xyz = internal_to_cartesian_angles(ca, lt, bond, theta, tau)
        n_next = torch.cat([xyz[..., 1:, 0, :], xyz[..., -1:, 0, :]], dim=-2)
        psi = dihedral(xyz[..., 0, :], xyz[..., 1, :], xyz[..., 2, :], n_next)
        psi = torch.where(last, math.radians(LAST_RESIDUE_PSI_DEG), psi)
        tau = self._sibling_offsets(torch.where(kind == PSI, psi[..., None] + value, tau), lt.restype)
        xyz = internal_to_cartesian_angles(ca, lt, bond, theta, tau)
        return xyz.repeat_interleave(samples, dim=0)
