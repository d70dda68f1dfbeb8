"""Rule-based geometry: the baseline generator (``--model geometric``) and the idealiser of generated output.

Baseline: backbone N and C from the CA trace with internal coordinates binned by the local CA-trace shape (mean
values of their chain position at chain ends), every peptide then made an ideal planar unit (trans, or cis where
the CA trace is cis), O from the backbone torsion psi, side chains in the most frequent rotamer of the training data.
Angles, fixed torsions, rotamers and the trans peptide unit come from ``geometry/data/ideal_geometry.json``
(``python -m latcpb.tools.fit_ideal_geometry``); bond lengths from the Engh & Huber table. Deterministic: every
sample is the same structure.
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
from latcpb.geometry.nerf import bond_angle, dihedral, place_atom_angles
from latcpb.model.cg_features import chain_ends

NONE, FIXED, CHI, OFFSET, PSI = -1, 0, 1, 2, 3
LAST_RESIDUE_PSI_DEG = 140.0  # psi of a C-terminal residue, which no CA trace determines (extended)
ANGLE_EDGES_DEG = (90.0, 100.0, 110.0, 120.0, 130.0)  # virtual CA angle bins (6) for the backbone table
N_DIHEDRAL_BINS = 18                                    # virtual CA dihedral bins of 20 degrees
PROLINE_CHI_RANGE_DEG = 60.0   # proline ring search: chi1 within +-60 degrees (puckers lie within +-45)
RING_CLOSURE_TOLERANCE = 0.02  # Å: largest accepted deviation of the N-CD distance from its Engh & Huber length
CIS_CA_DISTANCE = 3.3  # Å: CA_i-CA_i+1 below this is cis (train set: cis 2.74-3.36, median 3.0; trans >= 3.53)
CB_SLOT = 4
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


class GeometryIdealizer(_IdealGeometry):
    """Imposes ideal local geometry on generated heavy atoms, keeping what a generator decides.

    Kept: the CA trace, the placement of every peptide plane about its CA-CA axis, phi/psi-dependent O, the side-chain
    torsions chi1, chi2 ... (proline's moved to the nearest closed ring). Imposed (``level`` "standard"): bond lengths
    (Engh & Huber), ideal planar peptide units (trans, or cis where CA_i-CA_i+1 < 3.3 Å), planar aromatic rings
    (ideal angles and torsions beyond CG), closed proline rings, L chirality (a CB on the D side of the backbone
    takes its ideal position, chi1 turned to keep the side chain where it was). ``level`` "full" also imposes the
    bond angles and torsions of the other rigid groups (guanidinium, carboxylate and amide planes, branch points, CB).
    ``__call__(xyz [B, N, 15, 3] Å, lt) -> [B, N, 15, 3] Å``.
    """

    def __init__(self, device="cpu", ideal=None, level="standard"):
        super().__init__(device, ideal)
        if level not in ("standard", "full"):
            raise ValueError(f"unknown idealisation level {level!r}")
        self.level = level
        self._ring = torch.as_tensor(rc.RESTYPE_AROMATIC_RING, device=self.device)  # [20, 15]
        grid = torch.deg2rad(torch.arange(-PROLINE_CHI_RANGE_DEG, PROLINE_CHI_RANGE_DEG + 0.5, 1.0,
                                          dtype=torch.float64, device=self.device))
        self._proline_grid = grid                                     # [G] rad

    def __call__(self, xyz, lt: LayoutTensors):
        _, theta, tau = cartesian_to_internal(xyz, lt)
        kind = self._kind[lt.restype]
        rigid = (kind == FIXED) | (kind == OFFSET)
        if self.level == "full":
            imposed_theta, imposed_tau = rigid, rigid
        else:   # aromatic rings: every angle beyond CG, every torsion but chi2
            ring = self._ring[lt.restype]
            imposed_theta, imposed_tau = ring, ring & rigid
        theta = torch.where(imposed_theta, self._theta[lt.restype].to(xyz.dtype), theta)
        tau = torch.where(imposed_tau & (kind == FIXED), self._value[lt.restype].to(xyz.dtype), tau)
        tau = torch.where(imposed_tau & (kind == OFFSET), self._sibling_offsets(tau, lt.restype), tau)
        theta, tau = theta.clone(), tau.clone()
        self._make_l(xyz, lt, theta, tau)
        self._set_peptide_units(xyz, lt, theta, tau, use_oxygen=True)
        bond = lt.bond_lengths.to(xyz.dtype)
        out = internal_to_cartesian_angles(xyz[..., 1, :], lt, bond, theta, tau)
        if self._close_prolines(out, lt, theta, tau):
            out = internal_to_cartesian_angles(xyz[..., 1, :], lt, bond, theta, tau)
        return out

    def _make_l(self, xyz, lt: LayoutTensors, theta, tau):
        """Chirality guard (``theta``/``tau`` [B, N, 15] set in place): a CB on the D side of its backbone in ``xyz``
        takes its ideal L position, and chi1 (with its torsion group) turns so that the first side-chain atom stays
        as near as it can to where it was."""
        n, ca, c, cb = (xyz[..., k, :] for k in (0, 1, 2, CB_SLOT))
        d_side = (torch.cross(n - ca, c - ca, dim=-1) * (cb - ca)).sum(-1) < 0                 # [B, N]
        d_side &= torch.as_tensor(rc.RESTYPE_ATOM_MASK[:, CB_SLOT], device=xyz.device)[lt.restype]
        if not bool(d_side.any()):
            return
        theta_cb = self._theta[lt.restype, CB_SLOT].to(xyz.dtype).expand_as(d_side)
        tau_cb = self._value[lt.restype, CB_SLOT].to(xyz.dtype).expand_as(d_side)
        new_cb = place_atom_angles(c, n, ca, lt.bond_lengths[:, CB_SLOT].to(xyz.dtype), theta_cb, tau_cb)
        chi1_atom = xyz[..., CB_SLOT + 1, :]                                                  # CG, OG, SG, CG1 ...
        turn = dihedral(n, ca, new_cb, chi1_atom) - tau[..., CB_SLOT + 1]                      # [B, N]
        group = torch.as_tensor(rc.RESTYPE_TORSION_GROUP, device=xyz.device)[lt.restype] == 0  # [N, 15] chi1 group
        theta[..., CB_SLOT] = torch.where(d_side, theta_cb, theta[..., CB_SLOT])
        tau[..., CB_SLOT] = torch.where(d_side, tau_cb, tau[..., CB_SLOT])
        tau += torch.where(d_side[..., None] & group, turn[..., None], torch.zeros_like(tau))

    def _close_prolines(self, xyz, lt: LayoutTensors, theta, tau) -> bool:
        """Set CB, CG, CD of every proline (in ``theta``/``tau`` [B, N, 15], in place) so that its ring closes.

        CB and the ring angles take their ideal values. For each chi1 of a 1-degree grid the chi2 that closes the
        ring (N-CD at its Engh & Huber length) is solved in closed form (two solutions, or the best-closing one);
        the (chi1, chi2) pair nearest to the generated one wins. ``xyz`` supplies the final backbone. Returns False
        when there is no proline.
        """
        rows = torch.nonzero(lt.restype == rc.RESTYPE_INDEX["PRO"]).flatten()
        if not len(rows):
            return False
        cb_slot, cg_slot, cd_slot = CB_SLOT, CB_SLOT + 1, CB_SLOT + 2     # PRO: CB, CG, CD
        pro = rc.RESTYPE_INDEX["PRO"]
        dtype = xyz.dtype
        ideal_theta = self._theta[pro].to(dtype)                          # [15]
        for slot in (cb_slot, cg_slot, cd_slot):
            theta[..., rows, slot] = ideal_theta[slot]
        tau[..., rows, cb_slot] = self._value[pro, cb_slot].to(dtype)
        bond = lt.bond_lengths[rows].to(dtype)                            # [P, 15]
        n, ca, c = (xyz[..., rows, k, None, :] for k in (0, 1, 2))        # [B, P, 1, 3]
        cb = place_atom_angles(c, n, ca, bond[:, None, cb_slot], theta[..., rows, cb_slot, None],
                               tau[..., rows, cb_slot, None])
        chi1_grid = self._proline_grid.to(dtype)                          # [G]
        cg = place_atom_angles(n, ca, cb, bond[:, None, cg_slot], ideal_theta[cg_slot], chi1_grid)  # [B, P, G, 3]
        # CD = CG + b (-cos(theta) u + sin(theta) (cos(chi2) v + sin(chi2) w)) in the NeRF frame of (CA, CB, CG):
        # |CD - N|^2 = A + R cos(chi2 - phi), solved for the ring-closing length
        u = F.normalize(cg - cb, dim=-1)
        w = F.normalize(torch.cross(cb - ca, u, dim=-1), dim=-1)
        v = torch.cross(w, u, dim=-1)
        b, t = bond[:, None, cd_slot], ideal_theta[cd_slot]
        q = cg - b[..., None] * torch.cos(t) * u - n
        qv, qw = (q * v).sum(-1), (q * w).sum(-1)                         # [B, P, G]
        radius = b * torch.sin(t)
        a = (q * q).sum(-1) + radius ** 2
        r = 2 * radius * torch.sqrt(qv ** 2 + qw ** 2)
        length = rc.RING_CLOSING_BONDS["PRO"][0][2]
        ratio = ((length ** 2 - a) / r).clamp(-1.0, 1.0)
        gap = (torch.sqrt(a + r * ratio) - length).abs()                  # 0 where the ring can close
        phi, delta = torch.atan2(qw, qv), torch.acos(ratio)
        chi2 = torch.stack([phi + delta, phi - delta], -1)                # [B, P, G, 2]
        chi1 = chi1_grid[:, None].expand_as(chi2)
        wrap = lambda x: torch.atan2(torch.sin(x), torch.cos(x))          # noqa: E731
        generated1, generated2 = (tau[..., rows, k, None, None] for k in (cg_slot, cd_slot))
        move = wrap(chi1 - generated1) ** 2 + wrap(chi2 - generated2) ** 2
        cost = torch.where(gap[..., None] <= RING_CLOSURE_TOLERANCE, move, 100.0 + gap[..., None])
        best = cost.flatten(-2).argmin(-1, keepdim=True)                  # [B, P, 1]
        tau[..., rows, cg_slot] = torch.gather(chi1.flatten(-2), -1, best)[..., 0]
        tau[..., rows, cd_slot] = torch.gather(chi2.flatten(-2), -1, best)[..., 0]
        return True


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
        return xyz.repeat_interleave(samples, dim=0)
