"""Rigid-group tables of the structure builder, derived once at import from ideal geometry.

Ideal geometry: bond lengths from the Engh & Huber table of ``residue_constants``; side-chain bond angles, fixed
torsions and sibling offsets from ``geometry/data/ideal_geometry.json`` (means over the training set, within 1.1
sigma of Engh & Huber 2001); backbone angles from Engh & Huber 2001 (``BACKBONE_ANGLES_DEG``). Torsions of planar
groups (rings, guanidinium, amides, carboxylates: fitted within 3 degrees of 0 or 180) are set to exactly 0 or 180.

Groups (OpenFold's rigid groups, written for the 15-slot layout): the backbone (N, CA, C, CB; O and OXT come from the
peptide and chain-end rules of ``backbone``) and one group per side-chain torsion chi k. Group k holds the atom
chi k turns (the fourth atom of ``CHI_ATOMS``) and every atom fixed relative to it that no later chi turns (branch
siblings, ring atoms, planar end groups). Its frame is the NeRF frame (``rigid.frame_from_points``) of the first
three chi atoms, turned about x by chi k; ``RESTYPE_GROUP_POSITIONS`` are the atoms' positions in that frame at
chi k = 0 (the "literature positions").
"""
from __future__ import annotations

import json
import math
from importlib import resources

import numpy as np
import torch

from latcpb.geometry import residue_constants as rc
from latcpb.geometry.nerf import place_atom_angles
from latcpb.geometry.rigid import frame_from_points, local_coordinates

PLANAR_SNAP_DEG = 3.0   # fitted fixed torsions / offsets this close to 0 or 180 are planar: set exactly
CB_SLOT = 4

# Engh & Huber (2001) backbone bond angles, (mean, sigma) degrees; classes GLY, PRO, general.
BACKBONE_ANGLES_DEG = {
    "N-CA-C": {"general": (111.0, 2.7), "GLY": (113.1, 2.5), "PRO": (112.1, 2.6)},
    "CA-C-O": {"general": (120.1, 2.1), "GLY": (120.6, 1.8), "PRO": (120.2, 2.4)},
    # across the peptide bond: CA-C-N and O-C-N take the class of residue i, C-N-CA that of residue i+1
    "CA-C-N": {"general": (117.2, 2.2), "GLY": (116.2, 2.0), "PRO": (117.1, 2.8)},
    "O-C-N": {"general": (122.7, 1.6), "GLY": (123.2, 1.7), "PRO": (121.1, 1.9)},
    "C-N-CA": {"general": (121.7, 1.8), "GLY": (122.3, 2.1), "PRO": (119.3, 1.5)},
}
# C-terminal carboxylate (Engh & Huber's ASP/GLU carboxylate values): CA-C-O = CA-C-OXT, O-C-OXT.
C_TERMINUS_ANGLES_DEG = {"CA-C-O": (118.3, 2.1), "O-C-OXT": (123.4, 1.9)}


def load_ideal_geometry():
    """The fitted table (dict) shipped in ``latcpb/geometry/data/ideal_geometry.json``."""
    text = resources.files("latcpb").joinpath("geometry", "data", "ideal_geometry.json").read_text()
    return json.loads(text)


def _class(resname):
    return resname if resname in ("GLY", "PRO") else "general"


def _backbone_arrays():
    """Per residue type [20, ...]: angle means and sigmas (rad) of ``BACKBONE_ANGLES_DEG`` and bond lengths (Å)."""
    angles = {key: np.radians([table[_class(r)] for r in rc.RESTYPES]) for key, table in BACKBONE_ANGLES_DEG.items()}
    bonds = {key: np.array([{**rc.BACKBONE_BONDS, **rc.BOND_OVERRIDES.get(r, {})}[key] for r in rc.RESTYPES])
             for key in ("N-CA", "CA-C", "C-O", "C-OXT", "C-N", "CA-CB")}
    return angles, bonds


BACKBONE_ANGLES, BACKBONE_BONDS = _backbone_arrays()   # {name: [20, 2] rad (mean, sigma)}, {name: [20] Å}


def _snap(torsion_deg):
    """A fitted torsion (deg) set to exactly 0 or +-180 where it lies within ``PLANAR_SNAP_DEG`` of it."""
    for target in (-180.0, 0.0, 180.0):
        if abs(torsion_deg - target) < PLANAR_SNAP_DEG:
            return target
    return torsion_deg


def _ideal_residue(resname, ideal):
    """Ideal coordinates [15, 3] Å of one residue with every chi 0 (ideal N-CA-C), its group per slot [15]
    (-1: backbone or empty) and its (a, b, c) chi-frame slots [4, 3]."""
    entry = ideal["residues"][resname]
    names = rc.slot_names(resname)
    index = {n: k for k, n in enumerate(names) if n}
    xyz = np.zeros((rc.ATOMS_PER_RESIDUE, 3))
    n_ca_c = BACKBONE_ANGLES["N-CA-C"][rc.RESTYPE_INDEX[resname], 0]
    bb = {**rc.BACKBONE_BONDS, **rc.BOND_OVERRIDES.get(resname, {})}
    xyz[0] = [-bb["N-CA"], 0.0, 0.0]
    xyz[2] = [bb["CA-C"] * math.cos(math.pi - n_ca_c), bb["CA-C"] * math.sin(math.pi - n_ca_c), 0.0]
    group = np.full(rc.ATOMS_PER_RESIDUE, -1, dtype=np.int64)
    chi_of = {quad[3]: k for k, quad in enumerate(rc.CHI_ATOMS[resname])}
    torsion = {}
    order = sorted((k for k, n in enumerate(names) if n and n not in ("N", "CA", "C", "O", "OXT")),
                   key=lambda k: rc.RESTYPE_BUILD_LEVEL[rc.RESTYPE_INDEX[resname], k])
    for k in order:
        atom = names[k]
        spec = entry["atoms"][atom]
        a, b, c = (index[p] for p in rc.parents_of(resname, atom))
        kind = spec["torsion"]
        if kind.startswith("chi"):
            assert chi_of[atom] == int(kind[3:]) - 1 and rc.CHI_ATOMS[resname][chi_of[atom]][:3] == \
                rc.parents_of(resname, atom), (resname, atom)
            torsion[atom], group[k] = 0.0, chi_of[atom]
        elif kind.startswith("offset:"):
            sibling = kind.split(":", 1)[1]
            torsion[atom] = torsion[sibling] + math.radians(_snap(spec["offset_deg"]))
            group[k] = group[index[sibling]]
        else:
            torsion[atom] = math.radians(_snap(spec["tau_deg"]))
            group[k] = max(group[a], group[b], group[c]) if atom != "CB" else -1
        as_t = lambda v: torch.as_tensor(v, dtype=torch.float64)  # noqa: E731
        xyz[k] = place_atom_angles(as_t(xyz[a]), as_t(xyz[b]), as_t(xyz[c]), as_t(rc.bond_length(resname, atom)),
                                   as_t(math.radians(spec["theta_deg"])), as_t(torsion[atom])).numpy()
    if resname in rc.AROMATIC_RINGS:
        xyz = _close_ring(resname, xyz)
    frames = np.zeros((4, 3), dtype=np.int64)
    frames[:, :] = [0, 1, 2]
    for k, quad in enumerate(rc.CHI_ATOMS[resname]):
        frames[k] = [index[p] for p in quad[:3]]
    return xyz, group, frames


def _close_ring(resname, xyz):
    """The planar aromatic ring system (every atom beyond CG) moved in its plane so that every bond, ring-closing
    bonds included, has its Engh & Huber length (to 1e-6 Å), with the bond angles as near the fitted ones as that
    allows (least squares). CB and CG stay."""
    from scipy.optimize import least_squares

    names = rc.slot_names(resname)
    cb, cg = names.index("CB"), names.index("CG")
    moving = [k for k in range(cg + 1, rc.OXT_SLOT) if names[k]]
    atoms = [cb, cg] + moving
    bonds = [(names.index(rc.parents_of(resname, names[k])[2]), k, rc.bond_length(resname, names[k])) for k in moving]
    bonds += [(names.index(a), names.index(b), length) for a, b, length in rc.RING_CLOSING_BONDS[resname]]
    neighbours = {k: set() for k in atoms}
    for a, b, _ in bonds:
        neighbours[a].add(b)
        neighbours[b].add(a)
    neighbours[cg].add(cb)
    triples = [(a, v, b) for v in atoms for a in neighbours[v] for b in neighbours[v] if a < b]
    # in-plane basis: origin CG, x along CB -> CG, y towards CD1
    x = (xyz[cg] - xyz[cb]) / np.linalg.norm(xyz[cg] - xyz[cb])
    y = xyz[moving[0]] - xyz[cg]
    y = y - (y @ x) * x
    y /= np.linalg.norm(y)
    flat = {k: np.array([(xyz[k] - xyz[cg]) @ x, (xyz[k] - xyz[cg]) @ y]) for k in atoms}

    def angle(p, v, q):
        u, w = p - v, q - v
        return math.atan2(u[0] * w[1] - u[1] * w[0], u @ w)   # signed: keeps each atom on its side

    target = {t: angle(flat[t[0]], flat[t[1]], flat[t[2]]) for t in triples}

    def residuals(params):
        pos = dict(flat)
        for i, k in enumerate(moving):
            pos[k] = params[2 * i:2 * i + 2]
        out = [1e3 * (np.linalg.norm(pos[a] - pos[b]) - length) for a, b, length in bonds]
        out += [math.remainder(angle(pos[p], pos[v], pos[q]) - target[(p, v, q)], 2 * math.pi)
                for p, v, q in triples]
        return np.array(out)

    fit = least_squares(residuals, np.concatenate([flat[k] for k in moving]), xtol=1e-14, ftol=1e-14, gtol=1e-14)
    out = xyz.copy()
    for i, k in enumerate(moving):
        out[k] = xyz[cg] + fit.x[2 * i] * x + fit.x[2 * i + 1] * y
    return out


def _derive_group_tables(ideal=None):
    """RESTYPE_GROUP [20, 15] (chi 0..3 whose frame carries the atom, -1 backbone/empty); RESTYPE_GROUP_POSITIONS
    [20, 15, 3] Å (position in the group's frame at chi = 0); RESTYPE_CHI_FRAME [20, 4, 3] slots (a, b, c) of each
    chi frame; RESTYPE_CB_BASIS [20, 3] (CB direction in the basis of ``backbone.cb_basis``); RESTYPE_IDEAL
    [20, 15, 3] Å the ideal residue at chi = 0."""
    ideal = ideal or load_ideal_geometry()
    n, s = rc.N_RESTYPES, rc.ATOMS_PER_RESIDUE
    group = np.full((n, s), -1, dtype=np.int64)
    positions = np.zeros((n, s, 3))
    chi_frame = np.zeros((n, 4, 3), dtype=np.int64)
    cb_basis = np.zeros((n, 3))
    residues = np.zeros((n, s, 3))
    for r, resname in enumerate(rc.RESTYPES):
        xyz, g, frames = _ideal_residue(resname, ideal)
        residues[r], group[r], chi_frame[r] = xyz, g, frames
        t = torch.as_tensor(xyz)
        for k in range(s):
            if g[k] >= 0:
                a, b, c = frames[g[k]]
                rot, origin = frame_from_points(t[a], t[b], t[c])
                positions[r, k] = local_coordinates(rot, origin, t[k]).numpy()
        if rc.RESTYPE_ATOM_MASK[r, CB_SLOT]:
            cb_basis[r] = _cb_coefficients(xyz[0] - xyz[1], xyz[2] - xyz[1], xyz[CB_SLOT] - xyz[1])
    return group, positions, chi_frame, cb_basis, residues


def _cb_coefficients(n_vec, c_vec, cb_vec):
    """CB - CA [3] in the basis (bisector, difference, normal) of the unit CA->N and CA->C vectors (unit length)."""
    u, v = n_vec / np.linalg.norm(n_vec), c_vec / np.linalg.norm(c_vec)
    bis, dif = (u + v) / np.linalg.norm(u + v), (u - v) / np.linalg.norm(u - v)
    nor = np.cross(u, v)
    nor /= np.linalg.norm(nor)
    w = cb_vec / np.linalg.norm(cb_vec)
    return np.array([w @ bis, w @ dif, w @ nor])


(RESTYPE_GROUP, RESTYPE_GROUP_POSITIONS, RESTYPE_CHI_FRAME, RESTYPE_CB_BASIS,
 RESTYPE_IDEAL) = _derive_group_tables()


def _chi_quads():
    """RESTYPE_CHI_QUADS [20, 4, 4]: slots of the four atoms of each chi (0, 1, 2, 3 = N, CA, C, O where unused)."""
    quads = np.tile(np.arange(4), (rc.N_RESTYPES, 4, 1))
    for r, resname in enumerate(rc.RESTYPES):
        names = rc.slot_names(resname)
        for k, quad in enumerate(rc.CHI_ATOMS[resname]):
            quads[r, k] = [names.index(a) for a in quad]
    return quads


RESTYPE_CHI_QUADS = _chi_quads()
