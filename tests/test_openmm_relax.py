"""OpenMM stage: conversion, hydrogens, CA-restrained relaxation and its report (real OpenMM, small real proteins).

Data (tests/data/mini/): CLN025.pdb and T0922.pdb are copies of /work/shared/data/val/CLN025.pdb (chignolin,
10 residues, with OXT) and /work/shared/data/val/T0922.pdb (CASP target T0922, 74 residues, no OXT);
T0892_res42-47_HSD.pdb is residues 42-47 of /work/shared/data/val/T0892.pdb with HIS 44 renamed HSD.
"""
import csv
import json
import math
import os
import warnings

import numpy as np
import pytest

mda = pytest.importorskip("MDAnalysis")
pytest.importorskip("openmm")
from MDAnalysis.coordinates.memory import MemoryReader  # noqa: E402

from latcpb.errors import LatcpbInputError  # noqa: E402
from latcpb_openmm import (heavy_structure, load_forcefield, relax, relax_universe, to_openmm,  # noqa: E402
                           write_report)
from latcpb_openmm.report import clash_metrics  # noqa: E402

DATA = os.path.join(os.path.dirname(__file__), "data", "openmm")
MINI = os.path.join(os.path.dirname(__file__), "data", "mini")
CLN025 = os.path.join(MINI, "CLN025.pdb")
T0922 = os.path.join(MINI, "T0922.pdb")
HSD_FRAGMENT = os.path.join(DATA, "T0892_res42-47_HSD.pdb")


def universe(path):
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        return mda.Universe(path)


def with_frames(path, frames):
    u = universe(path)
    u.load_new(np.stack(frames).astype(np.float32), format=MemoryReader)
    return u


def ca_rms(a, b, u):
    ca = u.select_atoms("name CA").indices
    return float(np.sqrt(np.mean(np.sum((a[ca] - b[ca]) ** 2, axis=-1))))


@pytest.fixture(scope="module")
def t0922_clashing():
    """T0922 with frame 0 as deposited and frame 1 with three side-chain atoms pushed into other residues."""
    u = universe(T0922)
    x = u.atoms.positions.astype(np.float64)
    bad = x.copy()
    rng = np.random.default_rng(0)
    side = u.select_atoms("not name N CA C O CB")
    for k, atom in enumerate(rng.choice(side.indices, 3, replace=False)):
        res = u.atoms[atom].resindex
        others = u.select_atoms(f"not (resindex {res - 1}:{res + 1})").positions
        target = others[np.argmin(np.linalg.norm(others - x[atom], axis=-1))]
        direction = rng.normal(size=3)
        bad[atom] = target + 0.6 * direction / np.linalg.norm(direction)
    u = with_frames(T0922, [x, bad])
    out, reports = relax_universe(u, progress=False)
    return u, out, reports


def test_conversion_bonds_oxt_and_hydrogens():
    u = universe(T0922)  # no OXT in the file: one is built on the C terminus
    hs = heavy_structure(u.atoms)
    assert hs.n_atoms == len(u.atoms) + 1
    assert (hs.source_index == -1).sum() == 1
    top_heavy, pos_heavy = to_openmm(u.atoms, hydrogens=False)
    atoms = list(top_heavy.atoms())
    oxt = [a for a in atoms if a.name == "OXT"]
    assert len(oxt) == 1 and oxt[0].residue.index == u.residues.n_residues - 1
    xyz = np.asarray(pos_heavy.value_in_unit(pos_heavy.unit)) * 10.0
    bonds = np.array([(a.index, b.index) for a, b in top_heavy.bonds()])
    lengths = np.linalg.norm(xyz[bonds[:, 0]] - xyz[bonds[:, 1]], axis=-1)
    assert len(bonds) >= len(atoms) - 1  # one connected chain (rings add bonds)
    assert 1.0 < lengths.min() and lengths.max() < 2.0  # every template bond is a real covalent bond (Å)
    top_h, pos_h = to_openmm(u.atoms)
    n_h = sum(1 for a in top_h.atoms() if a.element.symbol == "H")
    assert top_h.getNumAtoms() == len(atoms) + n_h
    assert 5.0 < n_h / u.residues.n_residues < 9.0  # hydrogens per residue of a protein
    assert load_forcefield("amber14", "vacuum").getUnmatchedResidues(top_h) == []


def test_relax_lowers_energy_keeps_ca_and_removes_clashes(t0922_clashing):
    u, out, reports = t0922_clashing
    assert [r.status for r in reports] == ["ok", "ok"]
    assert len(out.atoms) == len(u.atoms) and len(out.trajectory) == 2
    assert list(out.atoms.names) == list(u.atoms.names)
    assert list(out.atoms.resnames) == list(u.atoms.resnames)
    clashed = reports[1]
    assert clashed.clash_residues_before > 0 and clashed.clash_score_before > 0
    for r in reports:
        assert r.energy_after < r.energy_before
        assert r.ca_drift_rms < 0.1 and r.ca_drift_max < 0.25
        assert r.clash_residues_after <= r.clash_residues_before
        assert r.clash_residues_after == 0.0 and r.clash_score_after == 0.0
        assert r.bond_outliers_after == 0 and r.bond_rmsd_after < 0.05
    for f, r in enumerate(reports):
        u.trajectory[f]
        before = u.atoms.positions.copy()
        out.trajectory[f]
        after = out.atoms.positions
        assert ca_rms(before, after, u) < 0.1
        # the relaxed structure is the input nudged, not rebuilt
        assert 0.01 < np.sqrt(np.mean(np.sum((after - before) ** 2, axis=-1))) < 1.0
    # independent check of the clash metric on the returned coordinates
    out.trajectory[1]
    hs = heavy_structure(out.atoms)
    top = hs.topology
    xyz = hs.positions(out.atoms.positions.astype(np.float64))
    res = np.array([a.residue.index for a in top.atoms()])
    chain = np.array([a.residue.chain.index for a in top.atoms()])
    bonds = np.array([(a.index, b.index) for a, b in top.bonds()])
    assert clash_metrics(xyz, res, chain, bonds) == (0.0, 0.0)


def test_report_json_and_csv(t0922_clashing, tmp_path):
    _, _, reports = t0922_clashing
    path = write_report(reports, tmp_path / "relax.json")
    data = json.loads(open(path).read())
    assert data["summary"]["frames"] == 2 and data["summary"]["failed"] == 0
    assert data["frames"][1]["clash_residues_before"] > 0
    assert data["frames"][0]["energy_after"] < data["frames"][0]["energy_before"]
    rows = list(csv.DictReader(open(write_report(reports, tmp_path / "relax.csv"))))
    assert len(rows) == 2 and rows[1]["status"] == "ok"
    assert math.isclose(float(rows[0]["energy_after"]), reports[0].energy_after)
    with pytest.raises(LatcpbInputError, match="json or .csv"):
        write_report(reports, tmp_path / "relax.txt")


def test_hydrogens_output_and_path_input():
    out, reports = relax(CLN025, hydrogens=True, solvent="vacuum", progress=False)
    assert reports[0].status == "ok"
    heavy = universe(CLN025)
    hydrogens = out.select_atoms("element H")
    assert len(hydrogens) > 50 and len(out.atoms) == len(heavy.atoms) + len(hydrogens)
    assert reports[0].n_atoms == len(out.atoms)
    # every hydrogen sits ~1 Å from a bonded heavy atom after minimisation
    d = np.array([np.linalg.norm(b.atoms[0].position - b.atoms[1].position) for b in out.bonds
                  if "H" in (b.atoms[0].element, b.atoms[1].element)])
    assert len(d) == len(hydrogens) and 0.9 < d.min() and d.max() < 1.15


def test_failed_frames_are_flagged_not_fatal():
    u = universe(CLN025)
    x = u.atoms.positions.copy()
    stacked = x.copy()
    stacked[5] = stacked[30]          # two atoms on top of each other
    missing = x.copy()
    missing[7] = np.nan               # NaN coordinate
    u = with_frames(CLN025, [x, stacked, missing, x])
    out, reports = relax_universe(u, solvent="vacuum", progress=False)
    assert [r.status for r in reports] == ["ok", "failed", "failed", "ok"]
    assert "NaN" in reports[1].reason and "non-finite" in reports[2].reason
    for f in (1, 2):  # failed frames come back unrelaxed
        out.trajectory[f]
        np.testing.assert_array_equal(out.atoms.positions, np.stack([x, stacked, missing, x])[f])
    json.dumps([r.to_dict() for r in reports], allow_nan=False)  # NaN energies become null


def test_histidine_name_hint_and_option():
    u = universe(HSD_FRAGMENT)
    out, _ = relax_universe(u, hydrogens=True, solvent="vacuum", progress=False, max_iterations=50)
    his = out.select_atoms("resid 44")
    assert set(his.resnames) == {"HSD"}  # the input name is kept
    assert "HD1" in his.names and "HE2" not in his.names  # HSD = delta-protonated
    out, _ = relax_universe(u, hydrogens=True, solvent="vacuum", progress=False, max_iterations=50,
                            histidine="HIP")
    names = out.select_atoms("resid 44").names
    assert "HD1" in names and "HE2" in names


def test_unknown_residue_and_bad_options():
    u = universe(CLN025)
    u.residues[4].resname = "XYZ"
    with pytest.raises(LatcpbInputError, match="XYZ 5"):
        relax_universe(u, progress=False)
    good = universe(CLN025)
    with pytest.raises(LatcpbInputError, match="solvent"):
        relax_universe(good, solvent="water", progress=False)
    with pytest.raises(LatcpbInputError, match="platform"):
        relax_universe(good, platform="NoSuchPlatform", progress=False)
    with pytest.raises(LatcpbInputError, match="no 'gbn2'"):
        relax_universe(good, forcefield="charmm36", solvent="gbn2", progress=False)


def test_relaxer_reused_across_batches():
    from latcpb_openmm import Relaxer
    u = universe(CLN025)
    relaxer = Relaxer(u.atoms, max_iterations=200)
    first, r1 = relaxer.relax_universe(u, progress=False)
    context = relaxer.context
    second, r2 = relaxer.relax_universe(with_frames(CLN025, [u.atoms.positions] * 2), progress=False,
                                        frame_offset=1)
    assert relaxer.context is context  # set-up done once
    assert [r.frame for r in r1 + r2] == [0, 1, 2]
    # same input, same quality (multi-threaded CPU sums differ in the last bits, so paths may differ slightly)
    assert all(r.status == "ok" and r.ca_drift_rms < 0.1 for r in r1 + r2)
    assert abs(r2[0].energy_after - r1[0].energy_after) < 0.02 * abs(r1[0].energy_after)
    assert second.atoms.positions.shape == first.atoms.positions.shape
    with pytest.raises(LatcpbInputError, match="built for"):
        relaxer.relax_universe(universe(T0922), progress=False)
