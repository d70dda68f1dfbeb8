"""Rule-based baseline generator (``--model geometric``): fixed internal coordinates, most frequent rotamers.

Backbone N and C are placed from the CA trace with the mean internal coordinates of their chain position, O from
the backbone torsion psi, side chains in the most frequent rotamer of the training data. Angles, fixed torsions and
rotamers come from ``geometry/data/ideal_geometry.json`` (``python -m latcpb.tools.fit_ideal_geometry``); bond
lengths from the Engh & Huber table. Deterministic: every sample is the same structure.
"""
from __future__ import annotations

import json
import math
from importlib import resources

import numpy as np
import torch

from latcpb.geometry import residue_constants as rc
from latcpb.geometry.internal_coords import LayoutTensors, internal_to_cartesian_angles
from latcpb.geometry.nerf import dihedral

FIXED, CHI, OFFSET, PSI = 0, 1, 2, 3
LAST_RESIDUE_PSI_DEG = 140.0  # psi of a C-terminal residue, which no CA trace determines (extended)


def load_ideal_geometry():
    """The fitted table (dict) shipped in ``latcpb/geometry/data/ideal_geometry.json``."""
    text = resources.files("latcpb").joinpath("geometry", "data", "ideal_geometry.json").read_text()
    return json.loads(text)


def _tables(ideal):
    """Arrays [20, 15] of theta (rad), torsion kind, torsion value (rad), sibling slot; anchors [20, 3, 2, 2] rad."""
    n, s = rc.N_RESTYPES, rc.ATOMS_PER_RESIDUE
    theta = np.full((n, s), math.radians(110.0))
    kind = np.zeros((n, s), dtype=np.int64)
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
    return theta, kind, value, sibling, anchors


class GeometricGenerator:
    """Deterministic rule-based backmapping; implements ``latcpb.model.generator.Generator``."""

    name = "geometric"

    def __init__(self, device="cpu", ideal=None):
        self.device = torch.device(device)
        arrays = _tables(ideal or load_ideal_geometry())
        self._theta, self._kind, self._value, self._sibling, self._anchors = (
            torch.as_tensor(a, device=self.device) for a in arrays)

    def generate(self, ca, lt: LayoutTensors, samples=1, rng=None, **options):
        """CA [B, N, 3] Å -> [B * samples, N, 15, 3] Å (identical samples)."""
        dtype = ca.dtype
        n = ca.shape[-2]
        idx = torch.arange(n, device=ca.device)
        position = torch.where(lt.n_ref_b == idx + 1, 0, torch.where(lt.c_ref_a == idx - 1, 2, 1))  # [N]
        theta = self._theta[lt.restype].to(dtype).clone()                 # [N, 15]
        anchors = self._anchors[lt.restype, position].to(dtype)          # [N, 2, 2]
        theta[:, 0], theta[:, 2] = anchors[:, 0, 0], anchors[:, 1, 0]
        kind = self._kind[lt.restype]
        value = self._value[lt.restype].to(dtype)
        tau = torch.where(kind == OFFSET, 0.0, value)
        tau[:, 0], tau[:, 2] = anchors[:, 0, 1], anchors[:, 1, 1]
        tau = tau.expand(*ca.shape[:-2], n, rc.ATOMS_PER_RESIDUE).clone()  # [B, N, 15]
        theta = theta.expand_as(tau)
        bond = lt.bond_lengths.to(dtype)
        # O follows psi, which needs N of the next residue: place the backbone once, then O and its sibling OXT
        xyz = internal_to_cartesian_angles(ca, lt, bond, theta, tau)
        n_next = torch.cat([xyz[..., 1:, 0, :], xyz[..., -1:, 0, :]], dim=-2)
        psi = dihedral(xyz[..., 0, :], xyz[..., 1, :], xyz[..., 2, :], n_next)
        is_last = lt.c_ref_a == idx - 1
        psi = torch.where(is_last, math.radians(LAST_RESIDUE_PSI_DEG), psi)
        tau = torch.where(kind == PSI, psi[..., None] + value, tau)
        sibling_tau = torch.gather(tau, -1, self._sibling[lt.restype].expand_as(tau))
        tau = torch.where(kind == OFFSET, sibling_tau + value, tau)
        xyz = internal_to_cartesian_angles(ca, lt, bond, theta, tau)
        return xyz.repeat_interleave(samples, dim=0)
