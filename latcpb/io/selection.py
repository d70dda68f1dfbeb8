"""Choosing the CG beads to backmap: protein C-alpha beads only, non-protein beads left out with a note, unknown
residues inside protein chains named, and beads that are not CA atoms (Martini BB ...) refused unless asked for."""
from __future__ import annotations

from collections import Counter

import numpy as np

from latcpb.data.cg_topology import describe_residue, topology_attr
from latcpb.data.names import normalize_resname
from latcpb.errors import LatcpbInputError

DEFAULT_SELECT = "name CA"
# names of CG beads that stand for a backbone but are not C-alpha atoms (Martini, SIRAH, ...)
BACKBONE_BEAD_NAMES = ("BB", "BAS", "B", "GC", "BCK")
# residue names of ions and water: never an unknown residue of a chain, even when numbered right after one
IONS_AND_WATER = frozenset({"CA", "CAL", "CA2", "MG", "ZN", "ZN2", "NA", "SOD", "CL", "CLA", "K", "POT", "MN", "FE",
                            "FE2", "CU", "CO", "NI", "CD", "HG", "SR", "BA", "CS", "RB", "LI", "ION", "IOD", "BR",
                            "HOH", "WAT", "SOL", "TIP", "TIP3", "TIP4", "SPC", "W", "WF", "PW", "H2O", "DOD"})


def _shown(items, limit=10) -> str:
    items = list(items)
    return ", ".join(items[:limit]) + (f" and {len(items) - limit} more" if len(items) > limit else "")


def _counted(names) -> str:
    return ", ".join(f"{n} x{c}" if c > 1 else n for n, c in Counter(names).most_common(6))


def select_beads(universe, select=DEFAULT_SELECT, source="input", skip_unknown=False, beads_as_ca=False,
                 note=None):
    """The bead AtomGroup to backmap, one per amino-acid residue.

    ``select`` (MDAnalysis syntax) picks the candidates; of these, residues named as amino acids (standard,
    CHARMM/Amber/GROMACS variants) are kept. A non-amino-acid residue between two amino-acid beads of the same
    chain and numbering (resid +-1) is an *unknown residue*: an error listing them, or left out with
    ``skip_unknown``. Any other non-amino-acid residue (ions such as Ca2+ named CA, lipids, water, ligands) is left
    out and ``note(text)`` is called once with their count. Beads not named CA are refused unless ``beads_as_ca``.
    """
    try:
        candidates = universe.select_atoms(select)
    except Exception as err:  # MDAnalysis raises SelectionError / ValueError for bad strings
        raise LatcpbInputError(f"--select '{select}': invalid selection ({str(err).strip()})") from err
    if len(candidates) == 0:
        raise LatcpbInputError(f"{source}: --select '{select}' matched no atoms" + _hint_for_no_match(universe))
    if len(np.unique(candidates.ix)) != len(candidates):
        raise LatcpbInputError(f"{source}: --select '{select}' matched duplicated atoms")
    raw = np.asarray(candidates.resnames).astype(str)
    amino = np.array([normalize_resname(r) is not None for r in raw])
    unknown = _unknown_in_chain(candidates, amino)
    if unknown.any():
        labels = [describe_residue(raw[i], candidates.resids[i], topology_attr(candidates[i:i + 1], "chainIDs")[0])
                  for i in np.flatnonzero(unknown)]
        if not skip_unknown:
            raise LatcpbInputError(f"{source}: unknown residue names inside a protein chain (not amino acids LatCPB"
                                   f" knows): {_shown(labels)}; --skip-unknown leaves them out")
        if note is not None:
            note(f"{source}: left out {len(labels)} unknown residues (--skip-unknown): {_shown(labels, 5)}")
    if note is not None:
        _note_non_protein(universe, source, note)
    beads = candidates[amino]
    if len(beads) == 0:
        raise LatcpbInputError(f"{source}: --select '{select}' matched no amino-acid residues"
                               f" (residues {_counted(raw)})")
    names = np.asarray(beads.names).astype(str)
    not_ca = names != "CA"
    if not_ca.any() and not beads_as_ca:
        found = _counted(names[not_ca])
        martini = " (Martini-style backbone beads, not C-alpha atoms)" if set(names[not_ca]) & set(
            BACKBONE_BEAD_NAMES) else ""
        raise LatcpbInputError(
            f"{source}: --select '{select}' picked beads named {found}{martini}; LatCPB rebuilds atoms around"
            " C-alpha positions and would take these beads as exact CA positions: --beads-as-ca runs anyway")
    return beads


def _note_non_protein(group, source, note) -> None:
    """One note with the number of atoms (beads) in residues that are not amino acids (ions, lipids, water ...)."""
    try:
        residues = group.residues
        names = np.asarray(residues.resnames).astype(str)
    except Exception:  # a topology without residue names
        return
    known = {name: normalize_resname(name) is not None for name in np.unique(names)}
    other = np.array([not known[name] for name in names], dtype=bool)
    if other.any():
        atoms = group.atoms[np.isin(group.atoms.resindices, residues.resindices[other])]
        counts = Counter(names[other])
        shown = ", ".join(f"{n} x{c}" if c > 1 else n for n, c in counts.most_common(6))
        more = f" and {len(counts) - 6} more names" if len(counts) > 6 else ""
        note(f"{source}: left out {len(atoms)} non-protein atoms/beads in {int(other.sum())} residues ({shown}{more})")


def _unknown_in_chain(candidates, amino: np.ndarray) -> np.ndarray:
    """[n] bool: non-amino-acid candidates with an amino-acid neighbour (previous or next candidate) of the same
    segment and chain ID whose residue number differs by 1 — a residue that breaks a protein chain."""
    n = len(candidates)
    if n == 0 or amino.all():
        return np.zeros(n, dtype=bool)
    key = np.char.add(np.char.add(topology_attr(candidates, "segids"), "|"), topology_attr(candidates, "chainIDs"))
    resids = np.asarray(candidates.resids)
    ion = np.array([r.strip().upper() in IONS_AND_WATER for r in np.asarray(candidates.resnames).astype(str)])
    unknown = np.zeros(n, dtype=bool)
    changed = True
    while changed:  # a run of unknown residues inside a chain: each joins through its neighbour
        changed = False
        for i in np.flatnonzero(~amino & ~unknown & ~ion):
            for j in (i - 1, i + 1):
                if (0 <= j < n and (amino[j] or unknown[j]) and key[j] == key[i]
                        and abs(int(resids[j]) - int(resids[i])) == 1):
                    unknown[i] = changed = True
                    break
    return unknown


def _hint_for_no_match(universe) -> str:
    """' (...)' naming backbone beads of another name when a selection found nothing."""
    try:
        names = set(np.asarray(universe.atoms.names).astype(str))
    except Exception:  # topologies without names
        return ""
    found = sorted(names & set(BACKBONE_BEAD_NAMES))
    if found:
        return (f"; the topology has beads named {', '.join(found)} (Martini-style backbone beads, not C-alpha"
                f" atoms): --select 'name {found[0]}' --beads-as-ca takes them as CA positions")
    return ""
