"""Makes the CG fixtures of tests/data/cg from the small validation set in tests/data/val and tests/data/mini.

    python tests/data/cg/make_fixtures.py      # rewrites the files beside this script (deterministic)

Every file is a C-alpha (or Martini-like) trace of a real structure, written with MDAnalysis:
- trp_box.pdb / trp_box.xtc: 2JOF frames 0-11, times 1000-1110 ps (dt 10), cubic 60 Å box; frames 3, 7 and 10
  cross the box edge and are wrapped bead by bead into the box (the chain is split across the box there).
- dimer_box.gro / dimer_box.xtc: PED00151val (46 residues, 12 frames) and 2JOF (20 residues, frames 0-11) as two
  chains without chain IDs (GRO), numbering restarting at 1; 90 Å box, times 2000-2220 ps (dt 20), frames 2, 5,
  8, 11 wrapped bead by bead.
- soft_spacing.pdb / soft_spacing.xtc: PED00151val frames 0-5 with every CA-CA bond rescaled to a random length in
  2.6-5.0 Å (the spacing of HPS/Mpipi/MOFF-like CG models); one chain, no box.
- bonded_pair.pdb: two copies of 2JOF frame 0 in one chain A numbered 1-40, the second started 3.8 Å from the end
  of the first, with CONECT records along each copy only (the topology's bonds are the only sign of the break).
- mixed_beads.pdb: 2JOF frame 0 CA beads plus 3 Ca2+ ions (resname CA, name CA), 4 water beads (W) and one
  Martini-like POPC lipid (NC3 PO4 GL1 GL2 C1A C2A C1B C2B).
- martini_bb.pdb: 2JOF frame 0 as Martini-like beads: BB at each CA, SC1 at the side-chain heavy-atom centroid.
- t0892_cyx.pdb: T0892 CA trace with CYS 111 and CYS 123 (CA-CA 5.5 Å) named CYX.
- t0892_ssbond.pdb: T0892 CA trace with a CONECT record between the CYS 111 and CYS 123 beads.
- t0947_proline.pdb: CA trace of residues 147-172 of T0947 (the shared validation set, ``$LATCPB_SHARED_DATA`` or
  ../shared/data/val; skipped where it is absent): PRO 159 before a cis step (CA-CA 3.19 Å), a stretch on which
  ideal peptide units admit no proline phi with N-CA-C in bound until the beads move.
"""
from __future__ import annotations

import os
import warnings

import MDAnalysis as mda
import numpy as np
from MDAnalysis.coordinates.memory import MemoryReader

HERE = os.path.dirname(os.path.abspath(__file__))
DATA = os.path.dirname(HERE)


def _u(*paths):
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        return mda.Universe(*[os.path.join(DATA, p) for p in paths])


def _ca_frames(u, frames, select="name CA"):
    ca = u.select_atoms(select)
    return ca, np.stack([(u.trajectory[i], ca.positions.copy())[1] for i in frames]).astype(np.float32)


def _wrap_frames(xyz, box, wrapped, rng):
    """Centre every frame in the box; frames in ``wrapped`` are moved across the box edge then wrapped per bead."""
    out = xyz.copy()
    length = np.asarray(box[:3], dtype=np.float32)
    for k in range(len(out)):
        out[k] += length / 2 - out[k].mean(axis=0)
        if k in wrapped:
            edge = out[k, len(out[k]) // 2]  # the middle bead onto a box corner region: the chain crosses it
            out[k] += (length - 0.5) - edge + rng.uniform(-1, 1, 3).astype(np.float32)
            out[k] = np.mod(out[k], length)
    return out


def _write(universe, path, **kwargs):
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        universe.atoms.write(os.path.join(HERE, path), **kwargs)


def _write_traj(universe, path, times):
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        with mda.Writer(os.path.join(HERE, path), n_atoms=len(universe.atoms)) as w:
            for ts, t in zip(universe.trajectory, times):
                ts.time = float(t)
                w.write(universe.atoms)


def trp_box(rng):
    u = _u("val/2JOF.pdb", "val/2JOF.xtc")
    ca, xyz = _ca_frames(u, range(12))
    box = np.array([60, 60, 60, 90, 90, 90], dtype=np.float32)
    cg = mda.Merge(ca)
    cg.load_new(_wrap_frames(xyz, box, {3, 7, 10}, rng), format=MemoryReader, dimensions=box, dt=10.0)
    cg.trajectory[0]
    _write(cg, "trp_box.pdb")
    _write_traj(cg, "trp_box.xtc", 1000.0 + 10.0 * np.arange(12))


def dimer_box(rng):
    ped = _u("val/PED00151val.pdb", "val/PED00151val.xtc")
    trp = _u("val/2JOF.pdb", "val/2JOF.xtc")
    ca_a, xyz_a = _ca_frames(ped, range(12))
    ca_b, xyz_b = _ca_frames(trp, range(12))
    xyz_b = xyz_b + np.array([30.0, 0.0, 0.0], dtype=np.float32)
    cg = mda.Merge(ca_a, ca_b)
    cg.residues.resids = np.r_[np.arange(1, len(ca_a) + 1), np.arange(1, len(ca_b) + 1)]
    cg.add_TopologyAttr("chainIDs", [""] * len(cg.atoms))
    cg.add_TopologyAttr("segids", ["SYSTEM"] * len(cg.segments))
    box = np.array([90, 90, 90, 90, 90, 90], dtype=np.float32)
    xyz = np.concatenate([xyz_a, xyz_b], axis=1)
    cg.load_new(_wrap_frames(xyz, box, {2, 5, 8, 11}, rng), format=MemoryReader, dimensions=box, dt=20.0)
    cg.trajectory[0]
    _write(cg, "dimer_box.gro")
    _write_traj(cg, "dimer_box.xtc", 2000.0 + 20.0 * np.arange(12))


def soft_spacing(rng):
    u = _u("val/PED00151val.pdb", "val/PED00151val.xtc")
    ca, xyz = _ca_frames(u, range(6))
    lengths = rng.uniform(2.6, 5.0, size=(len(ca) - 1,)).astype(np.float32)
    out = []
    for frame in xyz:
        bonds = np.diff(frame, axis=0)
        bonds *= (lengths / np.linalg.norm(bonds, axis=1))[:, None]
        out.append(np.concatenate([frame[:1], frame[0] + np.cumsum(bonds, axis=0)]))
    cg = mda.Merge(ca)
    cg.load_new(np.stack(out), format=MemoryReader, dt=5.0)
    cg.trajectory[0]
    _write(cg, "soft_spacing.pdb")
    _write_traj(cg, "soft_spacing.xtc", 5.0 * np.arange(6))


def bonded_pair():
    u = _u("val/2JOF.pdb")
    ca = u.select_atoms("name CA")
    first = ca.positions.astype(np.float32)
    # second copy: the same shape, started 3.8 Å from the first copy's last bead
    direction = first[-1] - first[-2]
    second = first - first[0] + first[-1] + 3.8 * direction / np.linalg.norm(direction)
    cg = mda.Merge(ca, ca)
    cg.atoms.positions = np.concatenate([first, second])
    n = len(ca)
    cg.residues.resids = np.arange(1, 2 * n + 1)
    cg.add_TopologyAttr("chainIDs", ["A"] * 2 * n)
    cg.add_TopologyAttr("segids", ["A"] * len(cg.segments))
    bonds = [(i, i + 1) for i in range(n - 1)] + [(n + i, n + i + 1) for i in range(n - 1)]
    cg.add_TopologyAttr("bonds", bonds)
    _write(cg, "bonded_pair.pdb", bonds="all")


def mixed_beads():
    u = _u("val/2JOF.pdb")
    ca = u.select_atoms("name CA")
    n_ion, n_water, lipid = 3, 4, ["NC3", "PO4", "GL1", "GL2", "C1A", "C2A", "C1B", "C2B"]
    extra = n_ion + n_water + 1
    other = mda.Universe.empty(n_ion + n_water + len(lipid), n_residues=extra,
                               atom_resindex=np.r_[np.arange(n_ion + n_water), [n_ion + n_water] * len(lipid)],
                               trajectory=True)
    other.add_TopologyAttr("names", ["CA"] * n_ion + ["W"] * n_water + lipid)
    other.add_TopologyAttr("resnames", ["CA"] * n_ion + ["W"] * n_water + ["POPC"])
    other.add_TopologyAttr("resids", np.arange(101, 101 + extra))
    other.add_TopologyAttr("chainIDs", ["X"] * len(other.atoms))
    other.add_TopologyAttr("segids", ["X"])
    other.add_TopologyAttr("elements", ["CA"] * n_ion + [""] * (n_water + len(lipid)))
    other.add_TopologyAttr("record_types", ["HETATM"] * len(other.atoms))
    other.atoms.positions = ca.positions.mean(axis=0) + 15.0 + 4.0 * np.arange(len(other.atoms))[:, None] * \
        np.array([1.0, 0.3, 0.0])
    cg = mda.Merge(ca, other.atoms)
    _write(cg, "mixed_beads.pdb")


def martini_bb():
    u = _u("val/2JOF.pdb")
    names, resindex, positions = [], [], []
    for k, res in enumerate(u.residues):
        names.append("BB")
        resindex.append(k)
        positions.append(res.atoms.select_atoms("name CA").positions[0])
        side = res.atoms.select_atoms("not name N CA C O OXT and not element H")
        if len(side):
            names.append("SC1")
            resindex.append(k)
            positions.append(side.positions.mean(axis=0))
    cg = mda.Universe.empty(len(names), n_residues=len(u.residues), atom_resindex=resindex, trajectory=True)
    cg.add_TopologyAttr("names", names)
    cg.add_TopologyAttr("resnames", u.residues.resnames)
    cg.add_TopologyAttr("resids", u.residues.resids)
    cg.add_TopologyAttr("chainIDs", ["A"] * len(names))
    cg.atoms.positions = np.array(positions)
    _write(cg, "martini_bb.pdb")


def t0892_disulfide():
    u = _u("val/T0892.pdb")
    ca = u.select_atoms("name CA")
    cg = mda.Merge(ca)
    names = list(cg.residues.resnames)
    cys = [i for i, r in enumerate(cg.residues) if r.resid in (111, 123)]
    assert [names[i] for i in cys] == ["CYS", "CYS"]
    plain = mda.Merge(ca)
    plain.add_TopologyAttr("bonds", [tuple(cys)])
    _write(plain, "t0892_ssbond.pdb", bonds="all")
    for i in cys:
        names[i] = "CYX"
    cg.residues.resnames = names
    _write(cg, "t0892_cyx.pdb")


def t0947_proline():
    shared = os.environ.get("LATCPB_SHARED_DATA") or os.path.join(DATA, "..", "..", "..", "shared", "data", "val")
    path = os.path.join(shared, "T0947.pdb")
    if not os.path.exists(path):
        print(f"t0947_proline.pdb: {path} not found, kept as it is")
        return
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        u = mda.Universe(path)
    ca = u.select_atoms("name CA and resid 147:172")
    assert len(ca) == 26 and ca.residues[12].resname == "PRO"
    _write(mda.Merge(ca), "t0947_proline.pdb")


if __name__ == "__main__":
    rng = np.random.default_rng(11)
    trp_box(rng)
    dimer_box(rng)
    soft_spacing(rng)
    bonded_pair()
    mixed_beads()
    martini_bb()
    t0892_disulfide()
    t0947_proline()
    for name in sorted(os.listdir(HERE)):
        if not name.startswith(".") and not name.endswith(".py"):
            print(f"{name:24s} {os.path.getsize(os.path.join(HERE, name)):8d} bytes")
