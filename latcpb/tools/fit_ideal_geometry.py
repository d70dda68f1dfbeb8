"""Fit the rule-based baseline's geometry (bond angles, fixed torsions, most frequent rotamers) to a data set.

    python -m latcpb.tools.fit_ideal_geometry ../shared/data/train -o latcpb/geometry/data/ideal_geometry.json

Bond lengths are not fitted: they come from the Engh & Huber table. Angles are medians, torsions circular means,
rotamers the centre of the most populated chi bin combination. Reads at most ``--frames`` frames per entry.
"""
from __future__ import annotations

import argparse
import glob
import json
import math
import os
import warnings
from collections import defaultdict

import MDAnalysis as mda
import numpy as np
import torch

from latcpb.data.featurize import map_allatom
from latcpb.errors import LatcpbInputError
from latcpb.geometry import residue_constants as rc
from latcpb.geometry.internal_coords import LayoutTensors, cartesian_to_internal
from latcpb.geometry.nerf import dihedral
from latcpb.model.geometric import (ANGLE_EDGES_DEG, N_DIHEDRAL_BINS, backbone_bins, ca_trace_descriptors,
                                   peptide_frames)

# chis with three staggered wells (sp3-sp3); the others (next to a planar group) are binned every 30 degrees
SP3_CHIS = {"ARG": (0, 1, 2, 3), "LYS": (0, 1, 2, 3), "MET": (0, 1, 2), "GLN": (0, 1), "GLU": (0, 1),
            "ILE": (0, 1), "LEU": (0, 1), "PRO": (0, 1)}
SYMMETRIC_CHIS = {("PHE", 1), ("TYR", 1), ("ASP", 1), ("GLU", 2)}
POSITION_CLASSES = ("first", "interior", "last")


def _circular_mean_deg(values_rad):
    return float(np.degrees(np.arctan2(np.sin(values_rad).mean(), np.cos(values_rad).mean())))


def _wrap_deg(x):
    return float((x + 180.0) % 360.0 - 180.0)


def _chi_bin(resname, k, chi_rad):
    deg = np.degrees(chi_rad) % 360.0
    if k in SP3_CHIS.get(resname, (0,)):
        return np.floor(deg / 120.0).astype(int)  # wells near 60, 180, 300
    return np.floor(deg / 30.0).astype(int)


def sibling_slots(restype):
    """Slot of the first earlier atom sharing the parent triple of each slot (-1 if none), [15]."""
    out = np.full(rc.ATOMS_PER_RESIDUE, -1)
    seen = {}
    for s in range(3, rc.ATOMS_PER_RESIDUE):
        if not rc.RESTYPE_ATOM_MASK[restype, s]:
            continue
        parents = tuple(rc.RESTYPE_PARENTS[restype, s])
        out[s] = seen.get(parents, -1)
        seen.setdefault(parents, s)
    return out


def collect(paths, frames_per_entry):
    """Per (resname, slot, position) lists of theta and tau (rad); sibling torsion offsets; chi vectors; psi->O."""
    theta = defaultdict(list)
    tau = defaultdict(list)
    offsets = defaultdict(list)
    chis = defaultdict(list)
    backbone = []  # rows (atom 0=N/1=C, angle bin, dihedral bin, theta, tau)
    peptides = []  # local (C_i x, y, z, N_i+1 x, y) of trans peptides in their CA-CA frame
    psi_offset = []
    for pdb in paths:
        xtc = pdb[:-4] + ".xtc"
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            u = mda.Universe(pdb, xtc) if os.path.exists(xtc) else mda.Universe(pdb)
            try:
                mapping = map_allatom(u.atoms, pdb)
            except LatcpbInputError as err:
                print(f"skipped: {err}")
                continue
        lt = LayoutTensors(mapping.topology.layout)
        frames = np.unique(np.linspace(0, len(u.trajectory) - 1, min(frames_per_entry, len(u.trajectory))).astype(int))
        xyz = np.stack([mapping.slots(u.trajectory[f].positions.astype(np.float64)) for f in frames])
        d, th, ta = (t.numpy() for t in cartesian_to_internal(torch.as_tensor(xyz), lt))
        present = mapping.present
        layout = mapping.topology.layout
        first = np.r_[True, layout.chain_index[1:] != layout.chain_index[:-1]]
        last = np.r_[layout.chain_index[1:] != layout.chain_index[:-1], True]
        position = np.where(first, 0, np.where(last, 2, 1))
        # an atom's internal coordinates are valid when it and its parents (and anchors) are present
        parents_present = np.take_along_axis(present, rc.RESTYPE_PARENTS[layout.restype].reshape(len(present), -1), 1)
        valid = present & parents_present.reshape(len(present), rc.ATOMS_PER_RESIDUE, 3).all(-1)
        valid &= present[:, [0, 1, 2]].all(-1, keepdims=True)
        n_next = np.concatenate([xyz[:, 1:, 0], xyz[:, -1:, 0]], axis=1)
        psi = dihedral(*(torch.as_tensor(a) for a in (xyz[:, :, 0], xyz[:, :, 1], xyz[:, :, 2], n_next))).numpy()
        angle, dih_n, dih_c, ok = ca_trace_descriptors(torch.as_tensor(xyz[:, :, 1]), lt.chain_index)
        for k, (slot, dih) in enumerate(((0, dih_n), (2, dih_c))):
            a_bin, d_bin = (b.numpy() for b in backbone_bins(angle, dih))
            use = (ok.numpy() & valid[:, slot])[None].repeat(len(frames), 0)
            backbone.append(np.stack([np.full(use.sum(), k), a_bin[use], d_bin[use], th[:, :, slot][use],
                                      ta[:, :, slot][use]], axis=-1))
        nxt = np.nonzero(~last & present[:, :3].all(-1) & np.r_[present[1:, :2].all(-1), False])[0]
        if len(nxt):
            x, y, z, ca = peptide_frames(torch.as_tensor(xyz[:, nxt, 1]), torch.as_tensor(xyz[:, nxt + 1, 1]),
                                         torch.as_tensor(xyz[:, nxt + 1, 0]))
            c_rel = torch.as_tensor(xyz[:, nxt, 2]) - ca
            n_rel = torch.as_tensor(xyz[:, nxt + 1, 0]) - ca
            omega = dihedral(*(torch.as_tensor(v) for v in (xyz[:, nxt, 1], xyz[:, nxt, 2], xyz[:, nxt + 1, 0],
                                                               xyz[:, nxt + 1, 1])))
            trans = (omega.abs() > math.radians(150)).numpy()
            local = torch.stack([(c_rel * x).sum(-1), (c_rel * y).sum(-1), (c_rel * z).sum(-1),
                                 (n_rel * x).sum(-1), (n_rel * y).sum(-1)], dim=-1).numpy()
            peptides.append(local[trans])
        for i, r in enumerate(layout.restype):
            name = rc.RESTYPES[r]
            for s in np.nonzero(valid[i])[0]:
                if s == 1:
                    continue
                key = (name, int(s), POSITION_CLASSES[position[i]] if s in (0, 2) else "any")
                theta[key].extend(th[:, i, s])
                tau[key].extend(ta[:, i, s])
                sib = sibling_slots(r)[s]
                if sib >= 0 and valid[i, sib]:
                    offsets[(name, int(s))].extend(ta[:, i, s] - ta[:, i, sib])
            chi_slots = rc.RESTYPE_CHI_SLOT[r][rc.RESTYPE_CHI_MASK[r]]
            if len(chi_slots) and valid[i, chi_slots].all():
                chis[name].extend(ta[:, i, chi_slots])
            if not last[i] and valid[i, 3] and present[i + 1, 0]:
                psi_offset.extend(ta[:, i, 3] - psi[:, i])
    return (theta, tau, offsets, chis, np.asarray(psi_offset), np.concatenate(backbone),
            np.concatenate(peptides))


def _mode_rotamer(name, chis):
    """Centre (deg) of the most populated chi well, chosen chi by chi (chi1 first), and its population share.

    chis [M, n_chi] rad. Torsions of symmetric groups (Phe/Tyr chi2, Asp chi2, Glu chi3) are folded to 180 deg.
    """
    members = chis
    for k in range(chis.shape[1]):
        period = np.pi if (name, k) in SYMMETRIC_CHIS else 2 * np.pi
        member_bins = _chi_bin(name, k, members[:, k] % period)
        values, counts = np.unique(member_bins, return_counts=True)
        members = members[member_bins == values[counts.argmax()]]
    centre = []
    for k in range(chis.shape[1]):
        if (name, k) in SYMMETRIC_CHIS:  # circular mean of the doubled angle, halved
            doubled = _circular_mean_deg(2 * members[:, k]) / 2.0
            centre.append(_wrap_deg(doubled if np.cos(np.radians(doubled) - members[0, k]) > 0 else doubled + 180))
        else:
            centre.append(_circular_mean_deg(members[:, k]))
    return centre, float(len(members) / len(chis))


def fit_backbone_bins(rows, min_count=10):
    """Table [angle bin][dihedral bin] -> {"N": [theta, tau] deg or None, "C": ...} for interior residues."""
    table = []
    for a in range(len(ANGLE_EDGES_DEG) + 1):
        row = []
        for d in range(N_DIHEDRAL_BINS):
            cell = {}
            for k, atom in enumerate(("N", "C")):
                sel = rows[(rows[:, 0] == k) & (rows[:, 1] == a) & (rows[:, 2] == d)]
                cell[atom] = (None if len(sel) < min_count else
                              [float(np.degrees(np.median(sel[:, 3]))), _circular_mean_deg(sel[:, 4])])
            row.append(cell)
        table.append(row)
    return {"angle_edges_deg": list(ANGLE_EDGES_DEG), "dihedral_bins": N_DIHEDRAL_BINS, "table": table}


def fit(theta, tau, offsets, chis, psi_offset, backbone, peptides):
    """Turn the collected samples into the JSON table read by ``latcpb.model.geometric``."""
    median = np.median(peptides, axis=0)
    table = {"psi_to_O_offset_deg": _circular_mean_deg(psi_offset), "residues": {},
             "backbone_bins": fit_backbone_bins(backbone),
             "trans_peptide": {"C": [float(v) for v in median[:3]], "N": [float(v) for v in median[3:]],
                               "count": len(peptides)}}
    for r, name in enumerate(rc.RESTYPES):
        names = rc.slot_names(name)
        entry = {"anchors": {}, "atoms": {}, "rotamer_deg": []}
        for s, atom in ((0, "N"), (2, "C")):
            for pos in POSITION_CLASSES:
                # termini are rare: pool them over residue types
                th = theta[(name, s, pos)] if pos == "interior" else sum((theta[(n, s, pos)] for n in rc.RESTYPES), [])
                ta = tau[(name, s, pos)] if pos == "interior" else sum((tau[(n, s, pos)] for n in rc.RESTYPES), [])
                entry["anchors"].setdefault(atom, {})[pos] = [float(np.degrees(np.median(th))),
                                                              _circular_mean_deg(np.asarray(ta))]
        chi_slots = [int(s) for s in rc.RESTYPE_CHI_SLOT[r] if s >= 0]
        siblings = sibling_slots(r)
        for s in range(3, rc.ATOMS_PER_RESIDUE):
            atom = names[s]
            if not atom:
                continue
            key = (name, s, "any")
            spec = {"theta_deg": float(np.degrees(np.median(theta[key])))}
            if atom == "O":
                spec["torsion"] = "psi"
            elif s in chi_slots:
                spec["torsion"] = f"chi{chi_slots.index(s) + 1}"
            elif siblings[s] >= 0:
                spec["torsion"] = f"offset:{names[siblings[s]]}"
                spec["offset_deg"] = _circular_mean_deg(np.asarray(offsets[(name, s)]))
            else:
                spec["torsion"] = "fixed"
                spec["tau_deg"] = _circular_mean_deg(np.asarray(tau[key]))
            entry["atoms"][atom] = spec
        if chi_slots:
            entry["rotamer_deg"], entry["rotamer_population"] = _mode_rotamer(name, np.asarray(chis[name]))
        table["residues"][name] = entry
    return table


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("data_dir")
    parser.add_argument("-o", "--output", required=True)
    parser.add_argument("--frames", type=int, default=5, help="frames read per entry")
    args = parser.parse_args(argv)
    paths = sorted(glob.glob(os.path.join(args.data_dir, "*.pdb")))
    table = fit(*collect(paths, args.frames))
    table["source"] = {"data": os.path.abspath(args.data_dir), "entries": len(paths),
                       "frames_per_entry": args.frames}
    with open(args.output, "w") as fh:
        json.dump(table, fh, indent=1)
    print(f"wrote {args.output}")


if __name__ == "__main__":
    main()
