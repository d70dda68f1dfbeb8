"""The structure builder (latcpb.geometry.structure): valid chemistry by construction for any input.

Checked on random CA traces (valid spacing, trans and cis) with random peptide rotations, chi and chain-end torsions:
every bond length (Engh & Huber), every bond angle and rigid group (rings, planar groups, branch points: the ideal
residue of ``rigid_groups``), planarity of peptides and rings, L chirality; the angles documented as bounded (at CA,
across the peptide bond, the proline ring) within their bounds; gradients; batching. And the inverse on real
structures: rebuilding from the extracted degrees of freedom.
"""
from __future__ import annotations

import math

import numpy as np
import pytest
import torch

from latcpb.geometry import backbone as bb
from latcpb.geometry import residue_constants as rc
from latcpb.geometry import rigid_groups as rg
from latcpb.geometry.internal_coords import LayoutTensors, ResidueLayout
from latcpb.geometry.proline import RING_ANGLES_DEG
from latcpb.geometry.nerf import bond_angle, dihedral, place_atom_angles
from latcpb.geometry.structure import Torsions, build_structure, extract_torsions

PRO = rc.RESTYPE_INDEX["PRO"]


def random_trace(n, gen, cis_every=0):
    """A CA trace [n, 3] Å: CA-CA 3.75-3.87 Å (2.85-3.0 Å cis every ``cis_every``-th step), virtual angles 85-140
    degrees, random virtual dihedrals."""
    pts = [torch.zeros(3, dtype=torch.float64), torch.tensor([3.8, 0.0, 0.0], dtype=torch.float64),
           torch.tensor([5.0, 3.6, 0.0], dtype=torch.float64)]
    u = lambda lo, hi: lo + (hi - lo) * float(torch.rand((), generator=gen, dtype=torch.float64))  # noqa: E731
    while len(pts) < n:
        k = len(pts)
        d = u(2.85, 3.0) if cis_every and k % cis_every == 0 else u(3.75, 3.87)
        a, t = math.radians(u(85.0, 140.0)), u(-math.pi, math.pi)
        pts.append(place_atom_angles(pts[-3], pts[-2], pts[-1], torch.tensor(d, dtype=torch.float64),
                                     torch.tensor(a, dtype=torch.float64), torch.tensor(t, dtype=torch.float64)))
    ca = torch.stack(pts[:n])
    return ca


def random_system(gen, batch=3, lengths=(21, 19), cis_every=0):
    """Layout of two chains covering all 20 residue types (prolines twice), CA [batch, N, 3] Å, random Torsions."""
    n = sum(lengths)
    restype = torch.randperm(n, generator=gen) % rc.N_RESTYPES
    restype[[3, 11, 25]] = PRO
    chain = np.repeat(np.arange(len(lengths)), lengths)
    lt = LayoutTensors(ResidueLayout.from_chains(restype.numpy(), chain))
    ca = torch.stack([torch.cat([random_trace(m, gen, cis_every) + 40.0 * c for c, m in enumerate(lengths)])
                      for _ in range(batch)])
    ang = lambda *s: (torch.rand(*s, generator=gen, dtype=torch.float64) * 2 - 1) * math.pi  # noqa: E731
    return lt, ca, Torsions.from_angles(ang(batch, n), ang(batch, n, 4), ang(batch, n, 3))


def _bonds(resname):
    """Intra-residue bonds (slot a, slot b, Engh & Huber length Å): tree bonds and ring-closing bonds."""
    names = rc.slot_names(resname)
    out = [(0, 1, rc.bond_length(resname, "N")), (1, 2, rc.bond_length(resname, "C"))]
    for k, name in enumerate(names):
        if name and name not in ("N", "CA", "C"):
            out.append((names.index(rc.parents_of(resname, name)[2]), k, rc.bond_length(resname, name)))
    for a, b, length in rc.RING_CLOSING_BONDS.get(resname, []):
        out.append((names.index(a), names.index(b), length))
    return out


def _angles(bonds):
    """Bonded triples (a, vertex, b) of a bond list."""
    nb = {}
    for a, b, _ in bonds:
        nb.setdefault(a, set()).add(b)
        nb.setdefault(b, set()).add(a)
    return [(a, v, b) for v, s in nb.items() for a in s for b in s if a < b]


def _deg(x):
    return torch.rad2deg(x)


AT_CA = {(0, 1, 2), (0, 1, 4), (2, 1, 4)}   # angles at CA: bounded, not exact


def check_valid(xyz, lt, exact_tol=1e-3, angle_tol=0.1):
    """Assert that xyz [B, N, 15, 3] Å is valid chemistry by the builder's rules; returns the worst bounded angle
    deviations (in Engh & Huber sigma) by kind."""
    mask = lt.atom_mask
    first, last, has_next = bb.chain_flags(lt)
    worst = {}
    for r, resname in enumerate(rc.RESTYPES):
        rows = torch.nonzero(lt.restype == r).flatten()
        if not len(rows):
            continue
        x = xyz[:, rows]                                                        # [B, M, 15, 3]
        ideal = torch.as_tensor(rg.RESTYPE_IDEAL[r])
        bonds = _bonds(resname)
        for a, b, length in bonds:
            d = torch.linalg.norm(x[..., a, :] - x[..., b, :], dim=-1)
            if resname == "PRO" and (a, b) in ((0, 6), (6, 0)):
                assert (d - length).abs().max() < exact_tol, (resname, a, b)
                continue
            assert (d - length).abs().max() < exact_tol, (resname, a, b, float((d - length).abs().max()))
        for a, v, b in _angles(bonds):
            if 3 in (a, v, b) or 14 in (a, v, b):    # O, OXT: peptide and chain-end rules, checked below
                continue
            got = _deg(bond_angle(x[..., a, :], x[..., v, :], x[..., b, :]))
            want = _deg(bond_angle(ideal[a], ideal[v], ideal[b]))
            if resname == "PRO" and 6 in (a, v, b):   # ring closure: bounded, in Engh & Huber sigma
                name = {0: "CA-N-CD", 6: "CG-CD-N", 5: "CB-CG-CD"}[v]
                mean, sigma = RING_ANGLES_DEG[name]
                worst["PRO ring"] = max(worst.get("PRO ring", 0.0), float(((got - mean).abs() / sigma).max()))
                continue
            if (a, v, b) in AT_CA:
                key = f"{a}-{v}-{b}"
                worst[key] = max(worst.get(key, 0.0), float((got - want).abs().max()))
                continue
            assert (got - want).abs().max() < angle_tol, (resname, a, v, b, float((got - want).abs().max()))
        # rigid groups: every distance within a chi group (with its frame's b, c atoms) is the ideal one
        group = rg.RESTYPE_GROUP[r]
        for k in range(4):
            slots = list(np.flatnonzero(group == k)) + list(rg.RESTYPE_CHI_FRAME[r, k, 1:])
            if resname == "PRO" or len(slots) < 4:
                continue
            got = torch.cdist(x[..., slots, :], x[..., slots, :])
            want = torch.cdist(ideal[slots], ideal[slots])
            assert (got - want).abs().max() < exact_tol, (resname, k)
        if rc.RESTYPE_ATOM_MASK[r, 4]:   # L: CB on the same side of the backbone as in the ideal residue
            vol = lambda p: (torch.cross(p[..., 0, :] - p[..., 1, :], p[..., 2, :] - p[..., 1, :], dim=-1)  # noqa
                             * (p[..., 4, :] - p[..., 1, :])).sum(-1)
            assert (vol(x) * vol(ideal) > 0).all(), resname
    # peptides: planar, ideal bond, omega 180 (0 where the trace is cis)
    i = torch.nonzero(has_next).flatten()
    j = i + 1
    c_n = torch.linalg.norm(xyz[:, i, 2] - xyz[:, j, 0], dim=-1)
    want = torch.where(lt.restype[j] == PRO, 1.341, 1.329)
    assert (c_n - want).abs().max() < exact_tol
    omega = _deg(dihedral(xyz[:, i, 1], xyz[:, i, 2], xyz[:, j, 0], xyz[:, j, 1]))
    cis = torch.linalg.norm(xyz[:, i, 1] - xyz[:, j, 1], dim=-1) < bb.CIS_CA_DISTANCE
    dev = torch.where(cis, omega.abs(), 180.0 - omega.abs())
    assert dev.max() < angle_tol
    o_plane = _deg(dihedral(xyz[:, i, 3], xyz[:, i, 2], xyz[:, j, 0], xyz[:, j, 1]))
    assert torch.where(cis, 180.0 - o_plane.abs(), o_plane.abs()).max() < angle_tol    # O trans to CA_i+1 in trans
    angle_sum = sum(bond_angle(xyz[:, i, p], xyz[:, i, 2], q) for p, q in
                    ((1, xyz[:, j, 0]), (3, xyz[:, j, 0]), (1, xyz[:, i, 3])))
    assert (_deg(angle_sum) - 360.0).abs().max() < angle_tol                          # C planar
    # bounded angles of the peptide: within UNIT_SIGMA_LIMIT of Engh & Huber
    for name, p, q in (("CA-C-N", (i, 1), (j, 0)), ("C-N-CA", (i, 2), (j, 1)), ("CA-C-O", (i, 1), (i, 3)),
                       ("O-C-N", (i, 3), (j, 0))):
        vertex = (j, 0) if name == "C-N-CA" else (i, 2)
        got = bond_angle(xyz[:, p[0], p[1]], xyz[:, vertex[0], vertex[1]], xyz[:, q[0], q[1]])
        cls = lt.restype[j] if name == "C-N-CA" else lt.restype[i]
        mean, sigma = torch.as_tensor(rg.BACKBONE_ANGLES[name])[cls].unbind(-1)
        worst[name] = max(worst.get(name, 0.0), float(((got - mean).abs() / sigma).max()))
    # N-CA-C in sigma
    mean, sigma = torch.as_tensor(rg.BACKBONE_ANGLES["N-CA-C"])[lt.restype].unbind(-1)
    got = bond_angle(xyz[..., 0, :], xyz[..., 1, :], xyz[..., 2, :])
    worst["N-CA-C sigma"] = float(((got - mean).abs() / sigma).max())
    # chain ends: O, OXT planar carboxylate at ideal angles
    e = torch.nonzero(last).flatten()
    tor = _deg(dihedral(xyz[:, e, 3], xyz[:, e, 1], xyz[:, e, 2], xyz[:, e, 14]))   # O-CA-C-OXT improper: 180
    assert (180.0 - tor.abs()).max() < angle_tol
    for a, b, name in ((1, 3, "CA-C-O"), (1, 14, "CA-C-O"), (3, 14, "O-C-OXT")):
        got = _deg(bond_angle(xyz[:, e, a], xyz[:, e, 2], xyz[:, e, b]))
        assert (got - rg.C_TERMINUS_ANGLES_DEG[name][0]).abs().max() < angle_tol
    assert (torch.linalg.norm(xyz[:, e, 2] - xyz[:, e, 14], dim=-1) - rc.BACKBONE_BONDS["C-OXT"]).abs().max() \
        < exact_tol
    assert torch.isfinite(xyz[:, mask]).all()
    return worst


def _n_ca_c_sigma(xyz, lt):
    """|N-CA-C - Engh & Huber| / sigma [B, N]."""
    mean, sigma = torch.as_tensor(rg.BACKBONE_ANGLES["N-CA-C"])[lt.restype].unbind(-1)
    return (bond_angle(xyz[..., 0, :], xyz[..., 1, :], xyz[..., 2, :]) - mean).abs() / sigma


@pytest.mark.parametrize("seed", [0, 1, 2])
def test_random_inputs_build_valid_chemistry(seed):
    """All 20 residue types, two chains, trans peptides; random rotations, chi and chain-end torsions."""
    gen = torch.Generator().manual_seed(seed)
    lt, ca, tor = random_system(gen)
    xyz = build_structure(ca, tor, lt)
    assert torch.equal(xyz[..., 1, :], ca)                                   # CA beads kept exactly
    worst = check_valid(xyz, lt)
    assert worst["N-CA-C sigma"] <= bb.N_CA_C_SIGMA_LIMIT + 1e-6
    for name in ("CA-C-N", "C-N-CA", "CA-C-O", "O-C-N"):
        assert worst[name] <= bb.UNIT_SIGMA_LIMIT, (name, worst[name])
    # the other angles at CA move with N-CA-C (less than 4 sigma of Engh & Huber: no outlier)
    assert worst["0-1-4"] < 4 * 1.4 and worst["2-1-4"] < 4 * 1.5
    # a random trace need not admit a good proline ring (real traces do: see the real-trace test)
    assert worst["PRO ring"] < 10.0, worst
    # without the limiter, random rotations give impossible N-CA-C angles: the limiter is what bounds them
    assert _n_ca_c_sigma(build_structure(ca, tor, lt, limit_n_ca_c=False), lt).max() > 2 * bb.N_CA_C_SIGMA_LIMIT


def test_cis_peptides_where_the_trace_demands_them():
    gen = torch.Generator().manual_seed(5)
    lt, ca, tor = random_system(gen, cis_every=6)
    xyz = build_structure(ca, tor, lt)
    check_valid(xyz, lt)       # omega 0 exactly where CA-CA < 3.3 Å, 180 elsewhere; all exact geometry
    first, last, has_next = bb.chain_flags(lt)
    d = torch.linalg.norm(ca[:, 1:] - ca[:, :-1], dim=-1)
    assert ((d < bb.CIS_CA_DISTANCE) & has_next[:-1]).sum() >= 6


def _real(path, canonical=True):
    """(LayoutTensors, xyz [1, N, 15, 3] float64 Å, present [N, 15]) of a PDB file."""
    import MDAnalysis as mda

    from latcpb.data.featurize import map_allatom
    u = mda.Universe(path)
    mapping = map_allatom(u.atoms, source="ref")
    xyz = torch.as_tensor(mapping.slots(u.atoms.positions.astype(np.float64), canonical=canonical))[None]
    present = torch.as_tensor(mapping.present & mapping.topology.layout.atom_mask)
    return LayoutTensors(mapping.topology.layout), xyz, present


def _rmsd(a, b, mask):
    return float(((a - b) ** 2).sum(-1)[..., mask].mean().sqrt())


# (file, heavy, backbone, side-chain RMSD bounds in Å) of rebuilding a real structure from its extracted DOFs;
# measured 0.17 / 0.06 / 0.28 (T0922) and 0.20 / 0.09 / 0.31 (2JOF): real geometry is not ideal
REAL = [("tests/data/mini/T0922.pdb", 0.25, 0.10, 0.38), ("tests/data/val/2JOF.pdb", 0.28, 0.14, 0.42)]


@pytest.mark.parametrize("path, heavy, backbone, side", REAL)
def test_rebuild_real_structure_from_its_degrees_of_freedom(path, heavy, backbone, side):
    lt, xyz, present = _real(path)
    tor = extract_torsions(xyz, lt)
    out = build_structure(xyz[..., 1, :], tor, lt)
    assert torch.equal(out[..., 1, :], xyz[..., 1, :])
    bb_mask, sc_mask = present.clone(), present.clone()
    bb_mask[:, 4:] = False
    sc_mask[:, :5] = False
    sc_mask[:, 14] = False
    figures = _rmsd(out, xyz, present), _rmsd(out, xyz, bb_mask), _rmsd(out, xyz, sc_mask)
    print(path, "heavy %.3f backbone %.3f side chain %.3f Å" % figures)
    assert figures[0] < heavy and figures[1] < backbone and figures[2] < side
    check_valid(out, lt)
    # extraction is the inverse of the builder: built -> DOFs -> built again is the same structure (proline CG, CD
    # may move to a neighbouring solution of the ring solver, which trades ring angles against the requested chi)
    again = build_structure(out[..., 1, :], extract_torsions(out, lt), lt)
    ring = torch.zeros_like(lt.atom_mask)
    ring[lt.restype == PRO, 5:7] = True
    assert (again - out).abs()[:, lt.atom_mask & ~ring].max() < 1e-6
    assert (again - out).abs()[:, ring].max() < 0.1


def test_random_degrees_of_freedom_on_a_real_trace():
    """Random rotations, chi and chain ends on a real CA trace: every bound holds, the proline rings included."""
    lt, xyz, _ = _real("tests/data/mini/T0922.pdb")
    gen = torch.Generator().manual_seed(3)
    n = len(lt.restype)
    ang = lambda *s: (torch.rand(*s, generator=gen, dtype=torch.float64) * 2 - 1) * math.pi  # noqa: E731
    tor = Torsions.from_angles(ang(2, n), ang(2, n, 4), ang(2, n, 3))
    out = build_structure(xyz[..., 1, :].expand(2, n, 3), tor, lt)
    worst = check_valid(out, lt)
    assert worst["N-CA-C sigma"] <= bb.N_CA_C_SIGMA_LIMIT + 1e-6
    assert worst["PRO ring"] < 4.0, worst


def test_gradients_flow_and_batching():
    gen = torch.Generator().manual_seed(7)
    lt, ca, tor = random_system(gen, batch=2)
    peptide = tor.peptide.clone().requires_grad_(True)
    chi = tor.chi.clone().requires_grad_(True)
    ends = tor.ends.clone().requires_grad_(True)
    ca = ca.clone().requires_grad_(True)
    xyz = build_structure(ca, Torsions(peptide, chi, ends), lt)
    target = torch.randn(xyz.shape, generator=gen, dtype=xyz.dtype)
    (((xyz - target) ** 2).sum(-1) * lt.atom_mask).sum().backward()
    for name, g in (("peptide", peptide.grad), ("chi", chi.grad), ("ends", ends.grad), ("ca", ca.grad)):
        assert torch.isfinite(g).all() and g.abs().sum() > 0, name
    # chi k moves exactly the atoms of its group and later groups
    assert (chi.grad[:, :, :, :].abs().sum(-1)[..., 0][:, lt.restype == rc.RESTYPE_INDEX["GLY"]] == 0).all()
    # batched == one frame at a time
    with torch.no_grad():
        one = torch.cat([build_structure(ca[k:k + 1], Torsions(peptide[k:k + 1], chi[k:k + 1], ends[k:k + 1]), lt)
                         for k in range(2)])
        assert (one - xyz).abs()[:, lt.atom_mask].max() < 1e-9
        # float32 builds the same structure
        single = build_structure(ca.float(), Torsions(peptide.float(), chi.float(), ends.float()), lt)
        assert (single.double() - xyz).abs()[:, lt.atom_mask].max() < 5e-3


MINI = "tests/data/mini"


def test_dof_decoder_learns_and_ships_valid_chemistry(tmp_path):
    """``model.decoder_dofs``: the decoder head for the builder's degrees of freedom (peptide rotation, chi bins +
    offsets) lowers its loss on a fixed batch, and a tiny.json training run with it gives a generator whose output
    is valid chemistry."""
    import json

    from latcpb.model.latcpb_model import DEFAULT_LOSS, LatCPB
    from latcpb.model.latent_generator import LatentDiffusionGenerator
    from latcpb.training.dataset import CropSampler, load_cache, load_entry
    from latcpb.training.trainer import Trainer
    from latcpb.training.validation import entry_layout

    with open("latcpb/configs/tiny.json") as f:
        cfg = json.load(f)
    cfg["model"]["decoder_dofs"] = True
    torch.manual_seed(0)
    entries = load_cache(MINI, str(tmp_path / "mini.pt"), max_frames=2)
    batch = CropSampler(entries, 24, seed=1).sample(2)
    lt = LayoutTensors(batch.layout)
    model = LatCPB(cfg["model"])
    opt = torch.optim.Adam(model.autoencoder_parameters(), lr=3e-3)
    losses, chi_ce = [], []
    for _ in range(25):
        loss, logs = model.autoencoder_loss(batch.xyz, batch.present, batch.loss_mask, lt, batch.segment,
                                            DEFAULT_LOSS, generator=torch.Generator().manual_seed(0))
        opt.zero_grad()
        loss.backward()
        opt.step()
        losses.append(float(loss.detach()))
        chi_ce.append(float(logs["chi_ce"]))
    assert losses[-1] < 0.7 * losses[0] and chi_ce[-1] < 0.7 * chi_ce[0], (losses, chi_ce)
    cfg["data"].update({"train": MINI, "val": MINI, "cache_dir": str(tmp_path / "cache"), "max_frames": 2})
    cfg["train"].update({"autoencoder_steps": 4, "diffusion_steps": 2, "val_every": 4, "threads": 1,
                         "scale_batches": 1})
    out = str(tmp_path / "run")
    Trainer(cfg, out, progress=False).run()
    gen = LatentDiffusionGenerator.from_checkpoint(f"{out}/best.pt")
    e = load_entry(MINI, "T0922", 1)
    _, lt = entry_layout(e)
    ca = torch.as_tensor(e["coords"][:, :, 1])
    xyz = gen.generate(ca, lt, samples=2, rng=torch.Generator().manual_seed(0))
    assert xyz.shape == (2, 74, 15, 3)
    worst = check_valid(xyz.double(), lt, exact_tol=2e-3, angle_tol=0.2)      # float32 model output
    assert worst["N-CA-C sigma"] <= bb.N_CA_C_SIGMA_LIMIT + 0.05


def test_clash_relief_on_built_structures_keeps_them_valid():
    """Relief turns peptides, chain ends and chi of built structures (frames packed, randomly perturbed): severe
    overlaps (the validity metric's) fall at least 3-fold, every bond, angle and ring stays valid, the CA trace is
    kept exactly, and a structure built from the real torsions barely moves."""
    from latcpb.metrics.validity import severe_overlaps, validity_topology
    from latcpb.model.latent_generator import tile_layout
    from latcpb.model.refine import relieve_built_clashes

    lt, xyz, _ = _real("tests/data/mini/T0922.pdb")
    n = len(lt.restype)
    gen = torch.Generator().manual_seed(11)
    tor = extract_torsions(xyz, lt)
    pep, chi, ends = tor.angles()
    frames = []
    for _ in range(2):
        chi_r = (torch.rand(chi.shape, generator=gen, dtype=torch.float64) * 2 - 1) * math.pi
        pep_r = pep + (torch.rand(pep.shape, generator=gen, dtype=torch.float64) * 2 - 1) * math.radians(40)
        frames.append(build_structure(xyz[..., 1, :], Torsions.from_angles(pep_r, chi_r, ends), lt)[0])
    frames.append(build_structure(xyz[..., 1, :], tor, lt)[0])                 # the real torsions
    built = torch.cat(frames)
    packed = LayoutTensors(tile_layout(lt.layout, 3))
    segment = torch.arange(3).repeat_interleave(n)
    relieved = relieve_built_clashes(built, packed, segment, steps=40)
    check_valid(relieved.view(3, n, 15, 3), lt)
    assert torch.equal(relieved[:, 1], built[:, 1])
    topo = validity_topology(lt.restype.numpy(), lt.atom_mask.numpy(), np.arange(-1, n - 1))
    for k in range(2):
        before, after = (len(severe_overlaps(topo, x[k * n:(k + 1) * n].numpy())["pairs"]) for x in (built, relieved))
        assert after * 3 <= before, (k, before, after)
    real = slice(2 * n, 3 * n)
    move = (relieved[real] - built[real]).norm(dim=-1)[lt.atom_mask].pow(2).mean().sqrt()
    assert move < 0.3, float(move)


def test_relief_overlap_pairs_are_the_validity_metrics_in_every_copy():
    """The relief's pair search (all copies of a packed layout in one tree, exclusions from tables) finds, at zero
    margin and reach, exactly the severe overlaps of ``validity.severe_overlaps`` of each copy on its own, and none
    between copies (the copies here lie on top of each other)."""
    from latcpb.metrics.validity import severe_overlaps, validity_topology
    from latcpb.model.latent_generator import tile_layout
    from latcpb.model.refine import _overlap_candidates, _relief_topology

    lt, xyz, _ = _real("tests/data/mini/T0922.pdb")
    n = len(lt.restype)
    gen = torch.Generator().manual_seed(3)
    pep, chi, ends = extract_torsions(xyz, lt).angles()
    frames = [build_structure(xyz[..., 1, :], Torsions.from_angles(
        pep + (torch.rand(pep.shape, generator=gen, dtype=torch.float64) * 2 - 1) * math.radians(60),
        (torch.rand(chi.shape, generator=gen, dtype=torch.float64) * 2 - 1) * math.pi, ends), lt)[0]
        for _ in range(3)]
    built = torch.cat(frames)
    packed = LayoutTensors(tile_layout(lt.layout, 3))
    topology = _relief_topology(packed, torch.arange(3).repeat_interleave(n), built)
    assert topology.copies == 3 and topology.n == n
    pairs, _ = _overlap_candidates(built, topology, 0.0, reach=0.0)
    topo = validity_topology(lt.restype.numpy(), lt.atom_mask.numpy(), np.arange(-1, n - 1))
    found = {tuple(p) for p in pairs.tolist()}
    expected = set()
    for k in range(3):
        metric = severe_overlaps(topo, built[k * n:(k + 1) * n].numpy())["pairs"]
        assert len(metric) > 20, len(metric)                  # the random torsions made overlaps to find
        expected |= {(a + k * n * 15, b + k * n * 15) for a, b in metric.tolist()}
    assert found == expected


def test_relief_rescue_turns_stuck_peptides_and_rotamers():
    """Peptides turned by 180 degrees and side chains in wrong rotamers are local minima that gradient relief
    cannot leave; the rescue (other peptide turns and chi1/chi2 rotamers, then more relief) ends with fewer
    severe overlaps, still valid chemistry, the CA trace kept."""
    from latcpb.metrics.validity import severe_overlaps, validity_topology
    from latcpb.model.refine import relieve_built_clashes

    lt, xyz, _ = _real("tests/data/mini/T0922.pdb")
    n = len(lt.restype)
    gen = torch.Generator().manual_seed(5)
    pep, chi, ends = extract_torsions(xyz, lt).angles()
    flip = torch.rand(pep.shape, generator=gen) < 0.15
    chi_r = chi + (torch.randint(0, 3, chi.shape, generator=gen) * 2 * math.pi / 3).to(chi.dtype)
    built = build_structure(xyz[..., 1, :], Torsions.from_angles(pep + flip * math.pi, chi_r, ends), lt)[0]
    segment = torch.zeros(n, dtype=torch.long)
    topo = validity_topology(lt.restype.numpy(), lt.atom_mask.numpy(), np.arange(-1, n - 1))
    count = lambda x: len(severe_overlaps(topo, x.numpy())["pairs"])  # noqa: E731
    plain = relieve_built_clashes(built, lt, segment, steps=40)
    rescued = relieve_built_clashes(built, lt, segment, steps=40, rescue_steps=20)
    check_valid(rescued[None], lt)
    assert torch.equal(rescued[:, 1], built[:, 1])
    assert count(rescued) < count(plain) <= count(built), (count(built), count(plain), count(rescued))


def test_relief_leaves_no_side_chain_eclipsed_between_rotamer_wells():
    """A decoder that regresses chi puts an uncertain side chain between two rotamer wells (e.g. chi1 -120 degrees,
    between -60 and 180). Relief carries each chi's intrinsic torsion strain (``rc.CHI_PERIODICITY``): from real
    T0922 side chains turned to eclipsed chi (5 degrees off, both ways), no torsion with a profile stays eclipsed,
    at least 90 % end within 30 degrees of a minimum (the rest held by overlaps), and the structure stays valid
    chemistry on the same CA trace; without the strain terms (``strain=False``, for draws at temperature > 0) most
    stay eclipsed."""
    from latcpb.model.refine import relieve_built_clashes

    lt, xyz, _ = _real("tests/data/mini/T0922.pdb")
    n = len(lt.restype)
    pep, chi, ends = extract_torsions(xyz, lt).angles()
    period = torch.as_tensor(rc.RESTYPE_CHI_PERIODICITY)[lt.restype].to(chi.dtype)   # [N, 4]
    strained = period > 0
    step = 2 * math.pi / period.clamp(min=1)
    # the eclipsed angle (a maximum of the strain) nearest each real chi, 5 degrees to either side
    nudge = torch.where(torch.arange(n)[:, None] % 2 == 0, 1.0, -1.0) * math.radians(5.0)
    eclipsed = torch.round(chi / step) * step + nudge
    chi_e = torch.where(strained, eclipsed, chi)
    built = build_structure(xyz[..., 1, :], Torsions.from_angles(pep, chi_e, ends), lt)[0]

    def off_minimum(x):   # [N, 4] rad from the nearest strain minimum (0 where the chi has no profile)
        c = torch.atan2(*extract_torsions(x, lt).chi.unbind(-1)[::-1])
        return torch.where(strained, (c / step - 0.5 - torch.round(c / step - 0.5)).abs() * step, 0.0)

    assert (off_minimum(built)[strained] > math.radians(50)).all()
    relieved = relieve_built_clashes(built, lt, torch.zeros(n, dtype=torch.long), steps=80)
    check_valid(relieved[None], lt)
    assert torch.equal(relieved[:, 1], built[:, 1])
    left = off_minimum(relieved)[strained]
    assert (left < math.radians(55)).all(), float(left.max())       # none left eclipsed
    assert float((left < math.radians(30)).double().mean()) >= 0.9, int((left >= math.radians(30)).sum())
    # draws from a learned distribution (strain=False) keep their torsions: only overlaps move them
    drawn = off_minimum(relieve_built_clashes(built, lt, torch.zeros(n, dtype=torch.long), steps=80, strain=False))
    assert float((drawn[strained] > math.radians(50)).double().mean()) >= 0.5      # with strain: none


def _backbone_with(phi, psi):
    """N, CA, C [N, 15, 3] Å (other slots at CA) of a chain with the given phi, psi [N] rad (omega 180, ideal bonds
    and angles), placed atom by atom."""
    t = lambda v: torch.tensor(v, dtype=torch.float64)  # noqa: E731
    pts = [t([0.0, 1.458, 0.0]), t([0.0, 0.0, 0.0]), t([1.525, 0.0, 0.0])]       # N, CA, C of residue 0
    for k in range(1, len(phi)):
        for bond, angle, torsion in ((1.329, 116.2, psi[k - 1]), (1.458, 121.7, t(math.pi)), (1.525, 111.0, phi[k])):
            pts.append(place_atom_angles(pts[-3], pts[-2], pts[-1], t(bond), torch.deg2rad(t(angle)), torsion))
    bb3 = torch.stack(pts).view(len(phi), 3, 3)
    return torch.cat([bb3, bb3[:, 1:2].expand(-1, 12, -1)], 1)


def test_rama_strain_is_zero_where_the_wells_allow_and_grows_with_the_distance_outside():
    """Relief's Ramachandran term reads the wells fitted on train: at the centre of every bin it is 0 where the bin
    is allowed (density at or above the allowed level) and at least one bin (10 degrees) elsewhere, growing by at most
    one per bin stepped away (a distance); chain ends score 0."""
    from latcpb.metrics import wells as W
    from latcpb.model.refine import _rama_strain, _rama_tables

    n = 60
    lt = LayoutTensors(ResidueLayout.from_chains(np.zeros(n, dtype=np.int64), np.zeros(n, dtype=np.int64)))
    far = _rama_tables("cpu", torch.float64)
    gen = torch.Generator().manual_seed(2)
    inner = torch.arange(1, n - 1)
    for k, name in enumerate(W.RAMA_CLASSES):
        density, levels = W.load_wells()["rama"][name]
        allowed = torch.as_tensor(density >= levels["allowed"])
        assert torch.equal(far[k] == 0, allowed)
        assert (far[k][~allowed] >= 1).all()
        step = torch.maximum((far[k] - far[k].roll(1, 0)).abs().max(), (far[k] - far[k].roll(1, 1)).abs().max())
        assert step <= 1 + 1e-9                                      # 1-Lipschitz across bins, the grid periodic
        i, j = torch.randint(0, 36, (2, n), generator=gen)
        xyz = _backbone_with(torch.deg2rad(-175.0 + 10.0 * i), torch.deg2rad(-175.0 + 10.0 * j))
        got = _rama_strain(xyz, lt, torch.full((n,), k), far)
        assert torch.allclose(got[inner], far[k][i, j][inner], atol=1e-6), name
        assert got[0] == 0 and got[-1] == 0
        assert (got[inner] > 0).any() and (got[inner] == 0).any()      # both kinds of bin were drawn


def test_relief_turns_peptides_out_of_ramachandran_outliers(monkeypatch):
    """Peptides of real T0922 turned by 30-60 degrees (4 frames, packed) put residues outside the Ramachandran
    wells; relief with its Ramachandran term (the wells fitted on train) leaves at most a fifth of them and fewer than
    relief without the term, with valid chemistry on the same CA trace."""
    from latcpb.metrics import wells as W
    from latcpb.metrics.torsions import backbone_torsions
    from latcpb.model import refine
    from latcpb.model.latent_generator import tile_layout

    lt, xyz, _ = _real("tests/data/mini/T0922.pdb")
    n, copies = len(lt.restype), 4
    gen = torch.Generator().manual_seed(7)
    pep, chi, ends = extract_torsions(xyz, lt).angles()
    frames = []
    for _ in range(copies):
        sign = torch.where(torch.rand(pep.shape, generator=gen) < 0.5, -1.0, 1.0).to(pep.dtype)
        turn = sign * torch.deg2rad(30 + 30 * torch.rand(pep.shape, generator=gen, dtype=torch.float64))
        frames.append(build_structure(xyz[..., 1, :], Torsions.from_angles(pep + turn, chi, ends), lt)[0])
    built = torch.cat(frames)
    packed = LayoutTensors(tile_layout(lt.layout, copies))
    segment = torch.arange(copies).repeat_interleave(n)
    previous, following = np.arange(-1, n - 1), np.append(lt.restype.numpy()[1:], -1)

    def outliers(x):
        count = 0
        for frame in x.view(-1, n, 15, 3).numpy():
            phi, psi, _, pm, sm, _ = backbone_torsions(frame, lt.atom_mask.numpy(), previous)
            count += int(W.ramachandran(phi, psi, pm & sm, lt.restype.numpy(), following)["outlier"].sum())
        return count

    with_term = refine.relieve_built_clashes(built, packed, segment, steps=80)
    monkeypatch.setattr(refine, "RELIEF_RAMA_WEIGHT", 0.0)
    without = refine.relieve_built_clashes(built, packed, segment, steps=80)
    assert outliers(xyz[0]) == 0 and outliers(built) >= 10
    assert outliers(with_term) * 5 <= outliers(built) and outliers(with_term) < outliers(without)
    check_valid(with_term.view(copies, n, 15, 3), lt)
    assert torch.equal(with_term[:, 1], built[:, 1])
