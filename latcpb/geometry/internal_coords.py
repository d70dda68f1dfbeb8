"""Internal coordinates of residues in the 15-slot layout, and their exact inverse (batched NeRF).

Shapes: F frames, N residues, S = 15 slots. Coordinates ``[F, N, S, 3]`` Å; internal coordinates are three
``[F, N, S]`` tensors: bond length d (Å), bond angle theta (rad) and torsion tau (rad).

Anchors from the CA trace (CA itself has no internal coordinates):
- N_i from (A, B, CA_i): interior A = CA_{i+1}, B = CA_{i-1}; first residue of a chain A = CA_{i+2},
  B = CA_{i+1}; last residue A = CA_{i-2}, B = CA_{i-1}.
- C_i from (A, N_i, CA_i): A = CA_{i+1}, or CA_{i-1} on the last residue.
A reference beyond a two-residue chain is a virtual point (``nerf.virtual_neighbour``). Every other atom is placed
from atoms of its own residue (``residue_constants.PARENTS``), level by level, all residues at once.
"""
from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import torch

from latcpb.geometry import residue_constants as rc
from latcpb.geometry.nerf import bond_angle, dihedral, place_atom, virtual_neighbour

N_SLOT, CA_SLOT, C_SLOT = 0, 1, 2


@dataclass(frozen=True)
class ResidueLayout:
    """Per-residue arrays of one system (all chains concatenated), numpy, computed once per topology.

    restype [N] int; chain_index [N] int (a chain here is a continuous stretch, split at breaks);
    has_oxt [N] bool (last residue of a chain that ends a molecule); anchor references [N] int, -1 = virtual.
    """

    restype: np.ndarray
    chain_index: np.ndarray
    has_oxt: np.ndarray
    n_ref_a: np.ndarray
    n_ref_b: np.ndarray
    c_ref_a: np.ndarray

    @classmethod
    def from_chains(cls, restype, chain_index, has_oxt=None):
        """Build from residue types and a chain label per residue (chains must be contiguous, >= 2 residues)."""
        restype = np.asarray(restype, dtype=np.int64)
        chain_index = np.asarray(chain_index, dtype=np.int64)
        n = len(restype)
        idx = np.arange(n)
        first = np.ones(n, dtype=bool)
        last = np.ones(n, dtype=bool)
        first[1:] = chain_index[1:] != chain_index[:-1]
        last[:-1] = chain_index[1:] != chain_index[:-1]
        _, inverse, counts = np.unique(chain_index, return_inverse=True, return_counts=True)
        length = counts[inverse]
        if n and length.min() < 2:
            raise ValueError("every chain needs at least 2 residues")
        n_ref_b = np.where(first, idx + 1, idx - 1)
        n_ref_a = np.where(first, idx + 2, np.where(last, idx - 2, idx + 1))
        n_ref_a = np.where(length < 3, -1, n_ref_a)
        c_ref_a = np.where(last, idx - 1, idx + 1)
        has_oxt = last if has_oxt is None else np.asarray(has_oxt, dtype=bool)
        return cls(restype, chain_index, has_oxt, n_ref_a, n_ref_b, c_ref_a)

    @property
    def atom_mask(self) -> np.ndarray:
        """[N, S] bool: slots holding an atom (OXT only where ``has_oxt``)."""
        mask = rc.RESTYPE_ATOM_MASK[self.restype].copy()
        mask[:, rc.OXT_SLOT] &= self.has_oxt
        return mask

    def __len__(self):
        return len(self.restype)


class LayoutTensors:
    """Torch views of a ``ResidueLayout`` on one device (index tensors for gathers)."""

    def __init__(self, layout: ResidueLayout, device=None):
        as_long = lambda a: torch.as_tensor(a, dtype=torch.long, device=device)  # noqa: E731
        self.layout = layout
        self.restype = as_long(layout.restype)
        self.chain_index = as_long(layout.chain_index)
        self.atom_mask = torch.as_tensor(layout.atom_mask, device=device)
        self.parents = as_long(rc.RESTYPE_PARENTS[layout.restype])        # [N, S, 3]
        self.level = as_long(rc.RESTYPE_BUILD_LEVEL[layout.restype])      # [N, S]
        self.bond_lengths = torch.as_tensor(rc.RESTYPE_BOND_LENGTHS[layout.restype], device=device)  # [N, S] Å
        self.n_ref_a = as_long(layout.n_ref_a)
        self.n_ref_b = as_long(layout.n_ref_b)
        self.c_ref_a = as_long(layout.c_ref_a)
        self.virtual_a = self.n_ref_a < 0
        # per build level: flat target slots [M] and their flat parent slots [M, 3] in [N * S]
        n, s = self.level.shape
        base = torch.arange(n, device=device)[:, None] * s
        flat_parents = (self.parents + base[..., None]).reshape(-1, 3)
        flat_level = self.level.reshape(-1)
        self.level_targets = [torch.nonzero(flat_level == k).flatten() for k in range(rc.N_BUILD_LEVELS)]
        self.level_parents = [flat_parents[t] for t in self.level_targets]


def _anchor_points(ca, lt: LayoutTensors):
    """Reference points of the N and C anchors: (A_N, B_N, A_C), each [F, N, 3] Å."""
    b_n = ca[..., lt.n_ref_b, :]
    a_n = ca[..., lt.n_ref_a.clamp(min=0), :]
    if bool(lt.virtual_a.any()):
        a_n = torch.where(lt.virtual_a[:, None], virtual_neighbour(b_n, ca), a_n)
    return a_n, b_n, ca[..., lt.c_ref_a, :]


def _gather_slots(xyz, index):
    """xyz [F, N, S, 3], index [N, S] -> [F, N, S, 3]."""
    idx = index.expand(*xyz.shape[:-2], index.shape[-1])[..., None].expand(*xyz.shape[:-1], 3)
    return torch.gather(xyz, -2, idx)


def cartesian_to_internal(xyz, lt: LayoutTensors):
    """Internal coordinates of all slots: (d Å, theta rad, tau rad), each [F, N, S].

    xyz [F, N, S, 3] Å. Values in empty slots and in the CA slot are meaningless (use ``atom_mask``).
    """
    ca = xyz[..., CA_SLOT, :]
    a = _gather_slots(xyz, lt.parents[..., 0])
    b = _gather_slots(xyz, lt.parents[..., 1])
    c = _gather_slots(xyz, lt.parents[..., 2])
    a_n, b_n, a_c = _anchor_points(ca, lt)
    n_atom = xyz[..., N_SLOT, :]
    # anchors: N from (A_N, B_N, CA), C from (A_C, N, CA)
    a = torch.cat([a_n[..., None, :], a[..., 1:2, :], a_c[..., None, :], a[..., 3:, :]], dim=-2)
    b = torch.cat([b_n[..., None, :], b[..., 1:2, :], n_atom[..., None, :], b[..., 3:, :]], dim=-2)
    c = torch.cat([ca[..., None, :], c[..., 1:2, :], ca[..., None, :], c[..., 3:, :]], dim=-2)
    d = torch.linalg.norm(xyz - c, dim=-1)
    theta = bond_angle(b, c, xyz)
    tau = dihedral(a, b, c, xyz)
    return d, theta, tau


def internal_to_cartesian(ca, lt: LayoutTensors, bond, cos_theta, sin_theta, cos_tau, sin_tau):
    """Heavy atoms from the CA trace and internal coordinates (exact inverse of ``cartesian_to_internal``).

    ca [F, N, 3] Å; bond [F, N, S] or [N, S] Å; cos/sin of theta and tau [F, N, S].
    Returns xyz [F, N, S, 3] Å with empty slots at arbitrary finite positions (mask them with ``atom_mask``).
    """
    bond = bond.expand(cos_theta.shape)
    a_n, b_n, a_c = _anchor_points(ca, lt)
    n_atom = place_atom(a_n, b_n, ca, bond[..., N_SLOT], cos_theta[..., N_SLOT], sin_theta[..., N_SLOT],
                        cos_tau[..., N_SLOT], sin_tau[..., N_SLOT])
    c_atom = place_atom(a_c, n_atom, ca, bond[..., C_SLOT], cos_theta[..., C_SLOT], sin_theta[..., C_SLOT],
                        cos_tau[..., C_SLOT], sin_tau[..., C_SLOT])
    rest = ca[..., None, :].expand(*ca.shape[:-1], rc.ATOMS_PER_RESIDUE - 3, 3)
    xyz = torch.cat([n_atom[..., None, :], ca[..., None, :], c_atom[..., None, :], rest], dim=-2)
    lead = xyz.shape[:-3]
    n_slots = xyz.shape[-3] * rc.ATOMS_PER_RESIDUE
    flat = xyz.reshape(*lead, n_slots, 3)
    values = [v.expand(*lead, *v.shape[-2:]).reshape(*lead, n_slots)
              for v in (bond, cos_theta, sin_theta, cos_tau, sin_tau)]
    for targets, parents in zip(lt.level_targets, lt.level_parents):
        a, b, c = (flat[..., parents[:, k], :] for k in range(3))
        placed = place_atom(a, b, c, *(v[..., targets] for v in values))
        flat = flat.index_copy(flat.dim() - 2, targets, placed)
    return flat.reshape(xyz.shape)


def internal_to_cartesian_angles(ca, lt: LayoutTensors, bond, theta, tau):
    """``internal_to_cartesian`` with theta and tau in radians."""
    return internal_to_cartesian(ca, lt, bond, torch.cos(theta), torch.sin(theta), torch.cos(tau), torch.sin(tau))


def chi_angles(tau, lt: LayoutTensors):
    """Side-chain torsions chi1..chi4 [F, N, 4] rad from the slot torsions, and their mask [N, 4]."""
    restype = lt.restype
    chi_slot = torch.as_tensor(rc.RESTYPE_CHI_SLOT, device=tau.device)[restype].clamp(min=0)
    chi_mask = torch.as_tensor(rc.RESTYPE_CHI_MASK, device=tau.device)[restype]
    chi = torch.gather(tau, -1, chi_slot.expand(*tau.shape[:-1], 4))
    return chi, chi_mask
