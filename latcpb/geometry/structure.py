"""The structure builder: CA trace + the degrees of freedom chemistry leaves open -> heavy atoms [..., N, 15, 3].

``Torsions`` holds the free degrees of freedom, all as (cos, sin) unit vectors: one rotation per peptide about its
CA-CA axis, chi1-chi4, and one torsion per free chain-end group. ``build_structure`` makes valid chemistry by
construction from any values (see ``backbone`` and ``sidechain`` for what is exact and what is bounded);
``extract_torsions`` is its inverse on a real structure (training targets). The CA beads are kept exactly.
"""
from __future__ import annotations

from dataclasses import dataclass

import torch

from latcpb.geometry import residue_constants as rc
from latcpb.geometry import backbone as bb
from latcpb.geometry import rigid_groups as rg
from latcpb.geometry.nerf import dihedral
from latcpb.geometry.proline import close_prolines
from latcpb.geometry.sidechain import fit_side_chains, place_side_chains

_PRO = rc.RESTYPE_INDEX["PRO"]


@dataclass
class Torsions:
    """Free degrees of freedom of N residues, (cos, sin) unit vectors.

    peptide [..., N, 2]: rotation of peptide (i, i+1) about CA_i->CA_i+1 from the reference of
    ``backbone.peptide_axes`` (unused on a chain's last residue); chi [..., N, 4, 2]: chi1-chi4 (unused beyond the
    residue's chi count); ends [..., N, 3, 2]: psi of a chain's first residue (places its N), phi and psi of its last
    residue (place its C, and its O and OXT).
    """

    peptide: torch.Tensor
    chi: torch.Tensor
    ends: torch.Tensor

    @staticmethod
    def from_angles(peptide, chi, ends):
        """From angles in radians ([..., N], [..., N, 4], [..., N, 3])."""
        unit = lambda a: torch.stack([torch.cos(a), torch.sin(a)], -1)  # noqa: E731
        return Torsions(unit(peptide), unit(chi), unit(ends))

    def angles(self):
        """(peptide [..., N], chi [..., N, 4], ends [..., N, 3]) in radians."""
        ang = lambda v: torch.atan2(v[..., 1], v[..., 0])  # noqa: E731
        return ang(self.peptide), ang(self.chi), ang(self.ends)


def build_structure(ca, torsions: Torsions, lt, limit_n_ca_c=True):
    """CA [..., N, 3] Å + ``Torsions`` -> heavy atoms [..., N, 15, 3] Å (empty slots at CA).

    ``limit_n_ca_c``: turn peptide rotations where needed so that N-CA-C stays within its bound
    (``backbone.limit_n_ca_c``); the rotations actually used are those of ``extract_torsions`` of the output.
    """
    xyz = build_backbone(ca, torsions, lt, limit_n_ca_c)
    return close_proline_rings(place_side_chains(xyz, lt.restype, torsions.chi), torsions.chi, lt)


def fit_structure(target, lt, present=None):
    """The builder's structure nearest to ``target`` [..., N, 15, 3] Å (e.g. a decoder's NeRF output): peptide
    rotations and chain-end torsions extracted from it, then every chi fitted group by group to its atoms
    (``sidechain.fit_side_chains``), so a side chain whose own geometry is off keeps its place instead of its
    dihedrals. Valid chemistry by construction; the CA trace of ``target`` is kept."""
    torsions = extract_torsions(target, lt)
    xyz = build_backbone(target[..., 1, :], torsions, lt)
    xyz, chi = fit_side_chains(xyz, lt.restype, target, present)
    pro_chi = torch.where((lt.restype == _PRO)[:, None, None], torsions.chi, chi)
    return close_proline_rings(xyz, pro_chi, lt)


def build_backbone(ca, torsions: Torsions, lt, limit_n_ca_c=True, units=None, axes=None):
    """N, CA, C, O, CB and OXT [..., N, 15, 3] Å (side-chain slots at CA) of ``build_structure``. ``units``,
    ``axes``: ``backbone.PeptideUnits`` and ``backbone.peptide_axes`` of ``ca`` when already at hand."""
    units = units or bb.PeptideUnits(ca, lt)
    axes = axes or bb.peptide_axes(ca, lt)
    rotation = torsions.peptide
    if limit_n_ca_c:
        rotation = bb.limit_n_ca_c(ca, lt, units, axes, rotation)
    pep = bb.place_peptides(ca, units, axes, rotation)                                # [..., N, 3, 3] C, O, N+1
    n = len(lt.restype)
    prv = (torch.arange(n, device=ca.device) - 1).clamp(min=0)
    n_pep = pep[..., prv, 2, :]
    n_atom, c_atom, o_end, oxt = bb.place_chain_ends(ca, lt, n_pep, pep[..., 0, :], torsions.ends)
    _, last, _ = bb.chain_flags(lt)
    o_atom = torch.where(last[:, None], o_end, pep[..., 1, :])
    cb = bb.place_cb(n_atom, ca, c_atom, lt.restype)
    xyz = ca[..., None, :].expand(*ca.shape[:-1], rc.ATOMS_PER_RESIDUE, 3)
    return torch.cat([torch.stack([n_atom, ca, c_atom, o_atom, cb], -2), xyz[..., 5:14, :], oxt[..., None, :]], -2)


def close_proline_rings(xyz, chi, lt, only=None):
    """xyz [..., N, 15, 3] Å with every proline's CG, CD set by the ring solver, nearest to its requested chi1, chi2
    ((cos, sin) [..., N, 4, 2]); ``only`` [N] bool: just these residues' prolines (the others keep xyz's ring)."""
    pro = lt.restype == _PRO
    rows = torch.nonzero(pro if only is None else pro & only).flatten()
    if len(rows):
        first, _, _ = bb.chain_flags(lt)
        chi = torch.atan2(chi[..., rows, :2, 1], chi[..., rows, :2, 0])
        cg, cd = close_prolines(xyz[..., rows, 0, :], xyz[..., rows, 1, :], xyz[..., rows, 4, :],
                                xyz[..., (rows - 1).clamp(min=0), 2, :], ~first[rows], chi[..., 0], chi[..., 1])
        xyz = xyz.index_copy(-3, rows, torch.cat([xyz[..., rows, :5, :], cg[..., None, :], cd[..., None, :],
                                                  xyz[..., rows, 7:, :]], -2))
    return xyz


def chi_torsions(xyz, lt):
    """chi1-chi4 (cos, sin) [..., N, 4, 2] of xyz [..., N, 15, 3] Å ((1, 0) beyond the residue's chi count)."""
    quads = torch.as_tensor(rg.RESTYPE_CHI_QUADS, device=xyz.device)[lt.restype]          # [N, 4, 4]
    mask = torch.as_tensor(rc.RESTYPE_CHI_MASK, device=xyz.device)[lt.restype]
    idx = quads.expand(*xyz.shape[:-3], *quads.shape)
    pts = [torch.gather(xyz, -2, idx[..., j, None].expand(*idx.shape[:-1], 3)) for j in range(4)]
    chi = torch.where(mask, dihedral(*pts), torch.zeros_like(pts[0][..., 0]))
    return torch.stack([torch.cos(chi), torch.sin(chi)], -1)


def extract_torsions(xyz, lt) -> Torsions:
    """Inverse of ``build_structure``: the ``Torsions`` of a structure xyz [..., N, 15, 3] Å (real or built)."""
    units = bb.PeptideUnits(xyz[..., 1, :], lt)
    return Torsions(bb.peptide_rotations(xyz, lt, units), chi_torsions(xyz, lt), bb.end_torsions(xyz, lt))



