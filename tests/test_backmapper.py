"""``latcpb.backmap_universe`` (geometric model) on every validation entry: every reference heavy atom rebuilt,
Engh & Huber bond lengths, L chirality, input CA kept, numbering and chains preserved, frame counts."""
from __future__ import annotations

import MDAnalysis as mda
import numpy as np
import pytest
from MDAnalysis.coordinates.memory import MemoryReader

import latcpb
from conftest import quiet_universe, refined_ca, val_entry_params
from latcpb.data.names import is_hydrogen, normalize_atomname, normalize_resname
from latcpb.geometry import residue_constants as rc

HEAVY_ATOMS = {"ALA": 5, "ARG": 11, "ASN": 8, "ASP": 8, "CYS": 6, "GLN": 9, "GLU": 9, "GLY": 4, "HIS": 10,
               "ILE": 8, "LEU": 8, "LYS": 9, "MET": 8, "PHE": 11, "PRO": 7, "SER": 6, "THR": 7, "TRP": 14,
               "TYR": 12, "VAL": 7}
# Ring-closing bonds (not parent bonds of the build tree), Engh & Huber lengths in Å.
RING_BONDS = {"PRO": [("N", "CD", 1.473)], "PHE": [("CE2", "CZ", 1.382)], "TYR": [("CE2", "CZ", 1.378)],
              "TRP": [("NE1", "CE2", 1.370), ("CZ3", "CH2", 1.400)], "HIS": [("CE1", "NE2", 1.321)]}
PEPTIDE_CN = 1.329
CHAIN_BREAK = 4.2


def ca_universe(u, frames=None):
    """CA-only CG Universe (standard residues) with the chosen frames in memory."""
    ca = u.select_atoms("name CA")
    ca = ca[[normalize_resname(r) is not None for r in ca.resnames]]
    frames = range(len(u.trajectory)) if frames is None else frames
    coords = np.stack([(u.trajectory[i], ca.positions.copy())[1] for i in frames])
    cg = mda.Merge(ca)
    cg.load_new(coords, format=MemoryReader)
    return cg


def residue_key(atom):
    return (str(atom.chainID).strip() if hasattr(atom, "chainID") else "", int(atom.resid), atom.icode.strip())


def heavy_keys(atoms):
    """{(chain, resid, icode, normalised atom name)} of the heavy atoms of standard residues."""
    keys = set()
    for a in atoms:
        resname = normalize_resname(a.resname)
        element = a.element if hasattr(a, "element") else None
        if resname is None or is_hydrogen(a.name, element):
            continue
        keys.add(residue_key(a) + (normalize_atomname(resname, a.name),))
    return keys


def bond_deviations(aa):
    """Deviations (Å) from Engh & Huber of every covalent bond: parent bonds, ring closures, peptide bonds
    (consecutive residues of a chain closer than the break distance)."""
    intra, peptide = [], []
    residues = list(aa.residues)
    frames = [{a.name: a.position.astype(np.float64) for a in r.atoms} for r in residues]
    for r, pos in zip(residues, frames):
        for atom in pos:
            if atom == "CA":
                continue
            if atom == "N":
                parent = "CA"
            elif atom in ("C",):
                parent = "CA"
            elif atom in ("O", "OXT"):
                parent = "C"
            elif atom == "CB":
                parent = "CA"
            else:
                parent = rc.parents_of(r.resname, atom)[2]
            intra.append(np.linalg.norm(pos[atom] - pos[parent]) - rc.bond_length(r.resname, atom))
        for a, b, length in RING_BONDS.get(r.resname, []):
            intra.append(np.linalg.norm(pos[a] - pos[b]) - length)
    for i in range(len(residues) - 1):
        r, s = residues[i], residues[i + 1]
        if r.atoms[0].chainID != s.atoms[0].chainID or "OXT" in frames[i]:
            continue
        if np.linalg.norm(frames[i]["CA"] - frames[i + 1]["CA"]) > CHAIN_BREAK:
            continue
        ideal = 1.341 if s.resname == "PRO" else PEPTIDE_CN
        peptide.append(np.linalg.norm(frames[i]["C"] - frames[i + 1]["N"]) - ideal)
    return np.array(intra), np.array(peptide)


def chirality(aa):
    """Sign of (N - CA) x (C - CA) . (CB - CA) per residue with a CB: +1 for L amino acids."""
    signs = []
    for r in aa.residues:
        pos = {a.name: a.position.astype(np.float64) for a in r.atoms}
        if "CB" in pos:
            signs.append(np.sign(np.dot(np.cross(pos["N"] - pos["CA"], pos["C"] - pos["CA"]),
                                        pos["CB"] - pos["CA"])))
    return np.array(signs)


@pytest.mark.parametrize("val_entry", val_entry_params(), indirect=True)
def test_backmap_val_entry(val_entry):
    ref = quiet_universe(val_entry["pdb"], val_entry["xtc"]) if val_entry["xtc"] else quiet_universe(val_entry["pdb"])
    frames = [0, len(ref.trajectory) - 1] if len(ref.trajectory) > 1 else [0]
    cg = ca_universe(ref, frames)
    aa = latcpb.backmap_universe(cg, model="geometric")
    gaps = np.flatnonzero(np.diff(cg.atoms.resids) != 1)  # a numbering gap starts a chain of its own
    n_chains = (len(set(cg.atoms.chainIDs)) or 1) + len(gaps)
    # atom count: standard heavy atoms + one OXT per chain; frames kept
    assert len(aa.atoms) == sum(HEAVY_ATOMS[normalize_resname(r)] for r in cg.residues.resnames) + n_chains
    assert len(aa.trajectory) == len(frames)
    assert set(aa.residues.resnames) <= set(rc.RESTYPES)
    assert list(aa.residues.resids) == list(cg.residues.resids)
    first = slice(0, gaps[0] + 1 if len(gaps) else None)
    assert list(aa.select_atoms("name CA").chainIDs[first]) == [c or "A" for c in cg.atoms.chainIDs[first]]
    assert len(set(aa.atoms.chainIDs)) == n_chains
    ref_chir = None
    expected_ca = refined_ca(cg.atoms)
    assert np.sqrt(((expected_ca - np.stack([cg.atoms.positions for _ in cg.trajectory])) ** 2).sum(-1).mean(-1)).max() \
        < 0.1   # atomistic traces are moved by hundredths of an Å at most (T0892: 0.05 Å RMS)
    for k, f in enumerate(frames):
        ref.trajectory[f]
        aa.trajectory[k]
        cg.trajectory[k]
        # coverage: every heavy atom of the reference is present in the output (matched by chain/resid/name)
        # (pieces after a numbering gap have chain IDs of their own: matched by resid/name, one chain per entry)
        ref_keys, out_keys = ({k[1:] for k in heavy_keys(ref.atoms)}, {k[1:] for k in heavy_keys(aa.atoms)})
        missing = ref_keys - out_keys
        assert not missing, sorted(missing)[:5]
        assert len(out_keys) == len(aa.atoms)  # no duplicated names
        # input CA kept where they admit valid chemistry, else moved as refine_ca_trace moves them
        assert np.abs(aa.select_atoms("name CA").positions - expected_ca[k]).max() < 0.01
        intra, peptide = bond_deviations(aa)
        all_bonds = np.concatenate([intra, peptide])
        assert np.sqrt(np.mean(all_bonds ** 2)) < 0.02
        assert np.abs(intra).max() < 0.02
        assert np.sqrt(np.mean(peptide ** 2)) < 0.05
        # no D residues: same handedness as the (L) reference everywhere
        ref_chir = chirality(ref)
        assert (ref_chir == 1).all()
        assert (chirality(aa) == 1).all()
        assert np.isfinite(aa.atoms.positions).all()


def test_backmap_adk_trajectory_frames_and_samples():
    """AdK (CHARMM PSF/DCD, HSD): atom count, frames with start/stop/step, samples multiply frames."""
    from MDAnalysisTests.datafiles import DCD, PSF

    u = quiet_universe(PSF, DCD)
    aa = latcpb.backmap_universe(u, model="geometric", start=10, stop=40, step=10, samples=2, keep_beads=True)
    assert len(aa.trajectory) == 3 * 2
    ref_heavy = len(u.select_atoms("not name H*"))
    assert len(aa.atoms) == ref_heavy == 1656
    assert "HSD" in set(aa.residues.resnames) and "HIS" not in set(aa.residues.resnames)  # input names kept
    # frame-major samples; geometric is deterministic so both samples of a frame agree
    assert np.array_equal(aa.trajectory[0].positions, aa.trajectory[1].positions)
    u.trajectory[30]
    aa.trajectory[4]
    assert np.abs(aa.select_atoms("name CA").positions - u.select_atoms("name CA").positions).max() < 0.01


def test_backmap_an_atomgroup_of_a_trajectory():
    """An AtomGroup (here the first 100 residues of AdK) backmaps like a Universe: its atoms, every frame."""
    from MDAnalysisTests.datafiles import DCD, PSF

    u = quiet_universe(PSF, DCD)
    part = u.select_atoms("resid 1:100")
    aa = latcpb.backmap_universe(part, model="geometric", stop=3, keep_beads=True)
    assert len(aa.residues) == 100 and len(aa.trajectory) == 3
    u.trajectory[2]
    aa.trajectory[2]
    assert np.abs(aa.select_atoms("name CA").positions - part.select_atoms("name CA").positions).max() < 0.01


def test_plan_and_backmap_coordinates(val_dir):
    u = quiet_universe(val_dir / "CLN025.pdb")
    bm = latcpb.Backmapper(model="geometric", batch_size=2)
    plan = bm.plan(u.select_atoms("name CA"), source="cln")
    assert plan.n_residues == 10
    empty = plan.empty_universe(n_frames=3)
    assert len(empty.atoms) == plan.n_atoms and len(empty.trajectory) == 3
    ca = np.stack([u.select_atoms("name CA").positions] * 5)
    xyz = bm.backmap_coordinates(plan, ca)
    assert xyz.shape == (5, plan.n_atoms, 3) and xyz.dtype == np.float32
    with pytest.raises(latcpb.LatcpbInputError, match="shape"):
        bm.backmap_coordinates(plan, ca[:, :5])
