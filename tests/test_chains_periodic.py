"""The one chain rule (``latcpb.data.cg_topology.chain_starts``) and periodic images: bonds decide where the topology
has them, else chain/segment IDs and residue numbering; soft CG spacing is never a break; spacing adds a break only
where it fails in every frame checked; every chain is marked in the output (chainID, segid, TER) and read so by
OpenMM; chains wrapped across the box come back whole (or wrapped as the input was, with --wrap).

Fixtures: tests/data/cg (made by tests/data/cg/make_fixtures.py from the small validation set)."""
from __future__ import annotations

from pathlib import Path

import MDAnalysis as mda
import numpy as np
import pytest
from click.testing import CliRunner
from MDAnalysis.coordinates.memory import MemoryReader

import latcpb
from conftest import quiet_universe
from latcpb.cli.backmap import main
from latcpb.data.cg_topology import MAX_BEAD_SPACING, chain_starts
from latcpb.errors import LatcpbInputError

CG = Path(__file__).resolve().parent / "data" / "cg"


def run_cli(args, expect_exit=0):
    result = CliRunner().invoke(main, [*map(str, args), "--quiet", "--model", "geometric"])
    assert result.exit_code == expect_exit, (result.exit_code, result.stderr, result.exception)
    return result


def chains(aa):
    """[(segid, chainID, n_residues)] of an all-atom Universe, in order."""
    out = []
    for r in aa.residues:
        key = (r.segment.segid, r.atoms[0].chainID)
        if not out or tuple(out[-1][:2]) != key:
            out.append([*key, 0])
        out[-1][2] += 1
    return [tuple(c) for c in out]


def backbone_geometry(aa):
    """(max CA-CA, max peptide C-N) Å over consecutive residues of one chain (segid + chainID), current frame."""
    ca_ca, c_n = [], []
    res = list(aa.residues)
    for r, s in zip(res[:-1], res[1:]):
        if (r.segment.segid, r.atoms[0].chainID) != (s.segment.segid, s.atoms[0].chainID):
            continue
        pos_r = {a.name: a.position for a in r.atoms}
        pos_s = {a.name: a.position for a in s.atoms}
        ca_ca.append(np.linalg.norm(pos_r["CA"] - pos_s["CA"]))
        c_n.append(np.linalg.norm(pos_r["C"] - pos_s["N"]))
    return max(ca_ca), max(c_n)


@pytest.mark.parametrize("top,traj,n_chains", [("trp_box.pdb", "trp_box.xtc", 1),
                                               ("dimer_box.gro", "dimer_box.xtc", 2)])
def test_wrapped_chains_come_back_whole(tmp_path, top, traj, n_chains):
    """Frames wrapped bead by bead across the box: the output keeps times and box, and no chain is broken
    (all CA-CA <= 4.2 Å and peptide C-N < 1.5 Å in every frame)."""
    cg = quiet_universe(CG / top, CG / traj)
    raw_spacing = max(np.linalg.norm(np.diff(cg.atoms.positions, axis=0), axis=1).max() for _ in cg.trajectory)
    assert raw_spacing > 30.0  # the input really is wrapped somewhere
    out = tmp_path / "aa.xtc"
    run_cli([CG / traj, "--top", CG / top, "-o", out, "--batch-size", "5"])
    aa = quiet_universe(tmp_path / "aa.pdb", out)
    assert len(chains(aa)) == n_chains
    assert len(aa.trajectory) == len(cg.trajectory)
    for ts_aa, ts_cg in zip(aa.trajectory, cg.trajectory):
        assert ts_aa.time == pytest.approx(ts_cg.time)
        assert np.allclose(ts_aa.dimensions, ts_cg.dimensions, atol=1e-3)
        ca_ca, c_n = backbone_geometry(aa)
        assert ca_ca <= 4.2 and c_n < 1.5, (ts_aa.frame, ca_ca, c_n)


def test_users_universe_left_as_it_was():
    cg = quiet_universe(CG / "trp_box.pdb", CG / "trp_box.xtc")
    cg.trajectory[3]
    before = cg.atoms.positions.copy()
    latcpb.backmap_universe(cg, model="geometric")
    assert cg.trajectory.ts.frame == 3
    assert np.array_equal(cg.atoms.positions, before)
    assert not hasattr(cg, "bonds") or len(cg.bonds) == 0
    assert len(cg.trajectory.transformations) == 0


def test_wrap_option_puts_residues_where_the_input_had_them(tmp_path):
    """--wrap: every residue moved by the box vector of its bead, so CA atoms are the input beads (wrapped),
    residues stay whole."""
    cg = quiet_universe(CG / "trp_box.pdb", CG / "trp_box.xtc")
    aa = latcpb.backmap_universe(cg, model="geometric", wrap=True)
    for ts_aa, ts_cg in zip(aa.trajectory, cg.trajectory):
        assert np.abs(aa.select_atoms("name CA").positions - cg.atoms.positions).max() < 1e-3
        for r in aa.residues:
            pos = {a.name: a.position for a in r.atoms}
            assert np.linalg.norm(pos["N"] - pos["CA"]) < 1.6 and np.linalg.norm(pos["C"] - pos["CA"]) < 1.6
    run_cli([CG / "trp_box.xtc", "--top", CG / "trp_box.pdb", "-o", tmp_path / "aa.xtc", "--wrap"])


def test_chains_marked_in_pdb_and_read_by_openmm(tmp_path):
    """A GRO without chain IDs, numbering restarting at 1: two chains, each with its own chainID and segid, TER
    after each; OpenMM's PDBFile reads two chains and bonds nothing across them."""
    app = pytest.importorskip("openmm.app")
    out = tmp_path / "aa.pdb"
    run_cli([CG / "dimer_box.gro", "-o", out])
    aa = quiet_universe(out)
    found = chains(aa)
    assert [c[2] for c in found] == [46, 20]
    assert len({c[0] for c in found}) == 2 and len({c[1] for c in found}) == 2
    text = out.read_text().splitlines()
    ter = [i for i, line in enumerate(text) if line.startswith("TER")]
    assert len(ter) == 2
    assert text[ter[0] - 1][17:26] == text[[i for i, line in enumerate(text) if line.startswith("ATOM")
                                            and " OXT " in line][0]][17:26]
    pdb = app.PDBFile(str(out))
    assert [len(list(c.residues())) for c in pdb.topology.chains()] == [46, 20]
    chain_of = {a.index: a.residue.chain.index for a in pdb.topology.atoms()}
    pdb.topology.createStandardBonds()
    assert all(chain_of[a.index] == chain_of[b.index] for a, b in pdb.topology.bonds())


def test_soft_bead_spacing_is_not_a_break(tmp_path):
    """CG spacing of 2.6-5.0 Å (HPS/Mpipi-like): one chain, one OXT, peptide bonds everywhere."""
    cg = quiet_universe(CG / "soft_spacing.pdb", CG / "soft_spacing.xtc")
    spacing = np.linalg.norm(np.diff(cg.atoms.positions, axis=0), axis=1)
    assert spacing.max() > 4.6 and spacing.min() < 3.0
    out = tmp_path / "aa.xtc"
    run_cli([CG / "soft_spacing.xtc", "--top", CG / "soft_spacing.pdb", "-o", out])
    aa = quiet_universe(tmp_path / "aa.pdb", out)
    assert chains(aa) == [("A", "A", 46)]
    assert len(aa.select_atoms("name OXT")) == 1


def test_bonds_decide(tmp_path):
    """Two copies of a chain, one chain ID, numbering 1-40, 3.8 Å apart at the joint: CONECT bonds along each copy
    make two chains; the same file without CONECT is one chain."""
    out = tmp_path / "aa.pdb"
    run_cli([CG / "bonded_pair.pdb", "-o", out])
    assert [c[2] for c in chains(quiet_universe(out))] == [20, 20]
    plain = tmp_path / "plain.pdb"
    plain.write_text("".join(line for line in open(CG / "bonded_pair.pdb") if not line.startswith("CONECT")))
    run_cli([plain, "-o", tmp_path / "aa_plain.pdb"])
    assert [c[2] for c in chains(quiet_universe(tmp_path / "aa_plain.pdb"))] == [40]


def _trace(n=10, spacing=3.8):
    """A zig-zag CA trace [n, 3] Å with the given spacing."""
    angle = np.deg2rad(120.0)
    step = np.array([np.sin(angle / 2), np.cos(angle / 2), 0.0]) * spacing
    xyz = np.zeros((n, 3))
    for i in range(1, n):
        xyz[i] = xyz[i - 1] + step * np.array([1.0, (-1) ** i, 1.0])
    return xyz


def test_chain_rule_on_arrays():
    n = 10
    seg, chain, resid = ["S"] * n, ["A"] * n, np.arange(1, n + 1)
    xyz = _trace(n)
    start, _ = chain_starts(seg, chain, resid, xyz=xyz)
    assert start.sum() == 1
    # a chain ID change and a numbering jump are breaks
    start, why = chain_starts(seg, ["A"] * 5 + ["B"] * 5, resid, xyz=xyz)
    assert list(np.flatnonzero(start)) == [0, 5] and "ID" in why[5]
    start, why = chain_starts(seg, chain, np.r_[1:5, 10:16], xyz=xyz)
    assert list(np.flatnonzero(start)) == [0, 4] and "numbering" in why[4]
    # topology bonds decide: bonded across a numbering jump -> one chain; not bonded (neighbours bonded) -> break
    linked = np.ones(n - 1, dtype=int)
    assert chain_starts(seg, chain, np.r_[1:5, 10:16], linked=linked, xyz=xyz)[0].sum() == 1
    linked[4] = 0
    assert list(np.flatnonzero(chain_starts(seg, chain, resid, linked=linked, xyz=xyz)[0])) == [0, 5]
    # spacing: a break only where it fails in every frame checked
    far = xyz.copy()
    far[6:] += 10.0
    frames = np.stack([far, far, far])
    assert list(np.flatnonzero(chain_starts(seg, chain, resid, xyz=frames)[0])) == [0, 6]
    frames[1] = xyz
    assert chain_starts(seg, chain, resid, xyz=frames)[0].sum() == 1
    # minimum image: a pair split by the box is no break
    box = np.array([30.0, 30.0, 30.0, 90, 90, 90])
    wrapped = np.mod(xyz + 25.0, 30.0)
    assert np.linalg.norm(np.diff(wrapped, axis=0), axis=1).max() > MAX_BEAD_SPACING
    assert chain_starts(seg, chain, resid, xyz=wrapped, boxes=box)[0].sum() == 1
    # a lone residue made by a numbering jump alone is joined again when the spacing is fine
    assert chain_starts(seg, chain, np.r_[1:10, 15], xyz=xyz)[0].sum() == 1


def _cg_universe(xyz, resids=None, chain_ids=None):
    trp = quiet_universe(CG / "trp_box.pdb")
    cg = mda.Merge(trp.atoms)
    if resids is not None:
        cg.residues.resids = resids
    if chain_ids is not None:
        cg.add_TopologyAttr("chainIDs", chain_ids)
    cg.load_new(np.asarray(xyz, dtype=np.float32).reshape(-1, len(cg.atoms), 3), format=MemoryReader)
    return cg


def test_lone_residue_error_only_when_isolated():
    trp = quiet_universe(CG / "trp_box.pdb")
    xyz = trp.atoms.positions.copy()
    # residue 20 renumbered 25 but 3.8 Å from residue 19: still one chain
    aa = latcpb.backmap_universe(_cg_universe(xyz, resids=np.r_[1:20, 25]), model="geometric")
    assert [c[2] for c in chains(aa)] == [20]
    # really isolated: renumbered and 12 Å away
    far = xyz.copy()
    far[-1] += 12.0
    with pytest.raises(LatcpbInputError, match=r"SER 25 .*chain of 1 residue.*numbering jump"):
        latcpb.backmap_universe(_cg_universe(far, resids=np.r_[1:20, 25]), model="geometric")


def test_spacing_break_in_every_frame_splits_the_chain():
    """Beads 11-20 12 Å away in every frame (same chain ID, numbering continuous): two chains; in only one of
    three frames: an error naming that frame."""
    trp = quiet_universe(CG / "trp_box.pdb")
    xyz = trp.atoms.positions.copy()
    far = xyz.copy()
    far[10:] += 12.0
    aa = latcpb.backmap_universe(_cg_universe(np.stack([far, far, far])), model="geometric")
    assert [c[2] for c in chains(aa)] == [10, 10]
    with pytest.raises(LatcpbInputError, match=r"frame 1: beads GLY 10 \(chain A\) and GLY 11"):
        latcpb.backmap_universe(_cg_universe(np.stack([xyz, far, xyz])), model="geometric")


def _beads(n_chains, length=3, chain_ids=None, segids=None):
    """A CA-only Universe of n_chains straight-ish chains, numbered 1..length each."""
    n = n_chains * length
    u = mda.Universe.empty(n, n_residues=n, n_segments=n_chains, atom_resindex=np.arange(n),
                           residue_segindex=np.repeat(np.arange(n_chains), length), trajectory=True)
    u.add_TopologyAttr("names", ["CA"] * n)
    u.add_TopologyAttr("resnames", ["ALA"] * n)
    u.add_TopologyAttr("resids", np.tile(np.arange(1, length + 1), n_chains))
    u.add_TopologyAttr("segids", segids if segids is not None else [""] * n_chains)
    u.add_TopologyAttr("chainIDs", chain_ids if chain_ids is not None else [""] * n)
    u.atoms.positions = np.concatenate([_trace(length) + [0, 0, 20.0 * c] for c in range(n_chains)])
    return u


@pytest.mark.parametrize("n_chains,segids", [(3, ["PROA", "PROB", "PROC"]), (70, None)])
def test_every_output_chain_has_its_own_chain_id_and_segment(n_chains, segids):
    """Inputs without chain IDs (PSF segments; or 70 chains told apart by numbering only): every chain gets a chain
    ID of its own (A, B, ... and again after 62) and consecutive chains always differ in (segid, chainID)."""
    aa = latcpb.backmap_universe(_beads(n_chains, segids=segids), model="geometric")
    found = chains(aa)
    assert [c[2] for c in found] == [3] * n_chains
    assert all(a[:2] != b[:2] for a, b in zip(found[:-1], found[1:]))
    assert [c[1] for c in found[:3]] == ["A", "B", "C"]
    if segids:
        assert [c[0] for c in found] == segids
