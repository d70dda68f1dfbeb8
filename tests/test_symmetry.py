"""Symmetric side chains (ASP, GLU, PHE, TYR, ARG): sources name their equivalent atoms either way; training data
takes the canonical naming and metrics score a structure the same whichever naming it uses."""
import os
import warnings

import MDAnalysis as mda
import numpy as np
import pytest

from latcpb.data.featurize import map_allatom
from latcpb.data.symmetry import closest_symmetric
from latcpb.geometry import residue_constants as rc
from latcpb.metrics import evaluate

# Trp-cage: ASP, TYR, ARG with both namings among its frames
PDB = os.path.join(os.path.dirname(__file__), "data", "val", "2JOF.pdb")


def _renamed(u):
    """Copy of a Universe with every symmetric pair's names swapped (same coordinates)."""
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        v = mda.Merge(u.atoms)
    names = np.array(v.atoms.names, dtype=object)
    swaps = 0
    for atom in v.atoms:
        for _, _, pairs in [rc.SYMMETRIC_SWAPS[atom.resname]] if atom.resname in rc.SYMMETRIC_SWAPS else []:
            for a, b in pairs:
                if atom.name in (a, b):
                    names[atom.index] = b if atom.name == a else a
                    swaps += 1
    v.atoms.names = names
    assert swaps >= 6
    return v


@pytest.fixture(scope="module")
def trpcage():
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        return mda.Universe(PDB)


def test_canonical_naming_is_independent_of_the_source_naming(trpcage):
    original = map_allatom(trpcage.atoms)
    swapped = map_allatom(_renamed(trpcage).atoms)
    a, b = original.slots(trpcage.atoms.positions), swapped.slots(trpcage.atoms.positions)
    assert np.array_equal(a, b)
    raw_a = original.slots(trpcage.atoms.positions, canonical=False)
    raw_b = swapped.slots(trpcage.atoms.positions, canonical=False)
    assert not np.array_equal(raw_a, raw_b)                        # the raw namings do differ
    # the defining torsion of every symmetric residue lies within 90 degrees of its centre
    from MDAnalysis.lib.distances import calc_dihedrals
    restype = original.topology.layout.restype
    for i, t in enumerate(restype):
        quad = rc.RESTYPE_SYMMETRY_TORSION[t]
        if quad[0] < 0:
            continue
        torsion = calc_dihedrals(*[a[i, k][None].astype(np.float64) for k in quad])[0]
        assert np.cos(torsion - rc.RESTYPE_SYMMETRY_CENTRE[t]) >= 0


def test_metrics_do_not_depend_on_the_naming_of_symmetric_atoms(trpcage):
    r = evaluate(trpcage, _renamed(trpcage))
    assert r["rmsd_heavy_with_termini"] == pytest.approx(0.0, abs=1e-6)
    assert r["torsion_kl"] == pytest.approx(0.0, abs=1e-9)


def test_closest_symmetric_picks_the_nearer_naming():
    rng = np.random.default_rng(0)
    restype = np.array([rc.RESTYPE_INDEX["PHE"], rc.RESTYPE_INDEX["LEU"]])
    present = rc.RESTYPE_ATOM_MASK[restype].copy()
    present[:, rc.OXT_SLOT] = False
    ref = rng.normal(size=(2, 15, 3)) * present[..., None]
    swapped = ref[np.arange(2)[:, None], rc.RESTYPE_SYMMETRY_SWAP[restype]]
    assert not np.allclose(swapped[0], ref[0]) and np.allclose(swapped[1], ref[1])   # LEU is not symmetric
    assert np.allclose(closest_symmetric(swapped, ref, restype, present), ref)
