"""Per-frame relaxation report: energies, clashes, CA drift, bonds, chirality and cis peptides before and after.

A frame is "ok", "failed" (not relaxed: returned as it came) or "damaged" (relaxed, but after relaxation it has a
D residue or a broken bond: peptide C-N > 1.5 Å or a heavy-atom bond off its force-field length by > 10 %).
"""
from __future__ import annotations

import csv
import json
import math
import os
from dataclasses import asdict, dataclass, fields

import numpy as np
import openmm.app as app

from latcpb.errors import LatcpbInputError
from latcpb.metrics.structure import clash_scores

BOND_OUTLIER_FRACTION = 0.10     # |d - r0| > 10 % of the force field's r0: a broken bond
PEPTIDE_BREAK = 1.5              # Å, C-N of a peptide bond (1.33 Å ideal) beyond which it counts as broken
CIS_LIMIT_DEG = 30.0             # |omega| below this: cis peptide
MAX_NAMED = 10                   # residues named per field of the report


@dataclass
class FrameReport:
    """Outcome of relaxing one frame (JSON-serialisable via ``to_dict``).

    Energies kJ/mol (force field only, restraint excluded); clash_residues_*: % residues with a heavy-atom pair
    < 1.2 Å to a non-adjacent residue; clash_score_*: 100 x non-bonded heavy pairs < 1.2 Å / pairs < 5 Å;
    ca_drift_rms/max: CA displacement (Å); bond_outliers_*: heavy-atom bonds off the force field length by > 10 %;
    bond_rmsd_*: RMS heavy-atom bond-length deviation from the force field (Å); peptide_breaks_*: peptide C-N
    > 1.5 Å; d_residues_*: residues with D configuration at CA; cis_*: cis peptide bonds before non-proline
    residues; new_d_residues / new_cis / broken_bonds: '; '-separated labels ('HIS 44 (chain A)') of what
    relaxation created or left broken (bonds worst first); time ps of the input frame; status "ok", "failed"
    (returned unrelaxed) or "damaged" (relaxed, with a D residue or a broken bond); reason says why.
    """

    frame: int
    time: float = math.nan
    status: str = "ok"
    reason: str = ""
    energy_before: float = math.nan
    energy_after: float = math.nan
    clash_residues_before: float = math.nan
    clash_residues_after: float = math.nan
    clash_score_before: float = math.nan
    clash_score_after: float = math.nan
    ca_drift_rms: float = 0.0
    ca_drift_max: float = 0.0
    bond_outliers_before: int = 0
    bond_outliers_after: int = 0
    bond_rmsd_before: float = math.nan
    bond_rmsd_after: float = math.nan
    peptide_breaks_before: int = 0
    peptide_breaks_after: int = 0
    d_residues_before: int = 0
    d_residues_after: int = 0
    cis_before: int = 0
    cis_after: int = 0
    new_d_residues: str = ""
    new_cis: str = ""
    broken_bonds: str = ""
    n_atoms: int = 0
    seconds: float = 0.0

    def to_dict(self) -> dict:
        """Plain dict; non-finite floats become None (valid JSON)."""
        return {k: (None if isinstance(v, float) and not math.isfinite(v) else v) for k, v in asdict(self).items()}


def _labels(items, limit=MAX_NAMED) -> str:
    items = list(items)
    return "; ".join(items[:limit]) + (f"; and {len(items) - limit} more" if len(items) > limit else "")


class StructureChecks:
    """Geometry checks of one hydrogenated OpenMM topology, on heavy-atom positions [T, 3] Å of that topology.

    ``bonds`` [B, 2] heavy-atom bonds with force-field lengths ``r0`` [B] Å; ``labels`` [n_residues] for messages.
    """

    def __init__(self, top: app.Topology, bonds: np.ndarray, r0: np.ndarray, labels):
        self.labels = list(labels)
        self.bonds, self.r0 = np.asarray(bonds, dtype=np.int64).reshape(-1, 2), np.asarray(r0, dtype=np.float64)
        atoms = list(top.atoms())
        self.atom_names = [f"{a.name}" for a in atoms]
        self.residue_of_atom = np.array([a.residue.index for a in atoms])
        chiral, peptide = [], []
        previous = None
        for residue in top.residues():
            names = {a.name: a.index for a in residue.atoms()}
            if all(k in names for k in ("N", "CA", "C", "CB")):
                chiral.append((residue.index, names["N"], names["CA"], names["C"], names["CB"]))
            if previous is not None and previous[0].chain is residue.chain and all(
                    k in previous[1] for k in ("CA", "C")) and all(k in names for k in ("N", "CA")):
                peptide.append((residue.index, previous[1]["CA"], previous[1]["C"], names["N"], names["CA"],
                                residue.name != "PRO"))
            previous = (residue, names)
        self.chiral = np.asarray(chiral, dtype=np.int64).reshape(-1, 5)
        self.peptide = np.asarray(peptide, dtype=np.int64).reshape(-1, 6)

    def d_residues(self, xyz) -> np.ndarray:
        """Residue indices [K] with D configuration at CA: (N-CA) x (C-CA) . (CB-CA) < 0."""
        res, n, ca, c, cb = self.chiral.T
        vol = np.einsum("ij,ij->i", np.cross(xyz[n] - xyz[ca], xyz[c] - xyz[ca]), xyz[cb] - xyz[ca])
        return res[vol < 0]

    def cis_peptides(self, xyz) -> np.ndarray:
        """Residue indices [K] of non-proline residues whose preceding peptide bond is cis (|omega| < 30°)."""
        from latcpb.metrics.torsions import dihedral

        res, ca0, c0, n1, ca1, non_pro = self.peptide.T
        omega = dihedral(xyz[ca0], xyz[c0], xyz[n1], xyz[ca1])
        return res[(np.abs(omega) < np.deg2rad(CIS_LIMIT_DEG)) & (non_pro == 1)]

    def peptide_breaks(self, xyz) -> np.ndarray:
        """Residue indices [K] whose peptide bond to the previous residue is longer than 1.5 Å."""
        res, _, c0, n1, _, _ = self.peptide.T
        return res[np.linalg.norm(xyz[c0] - xyz[n1], axis=-1) > PEPTIDE_BREAK]

    def bond_stats(self, xyz):
        """(count of heavy bonds off r0 by > 10 %, RMS deviation Å, mask [B] of those bonds)."""
        d = np.linalg.norm(xyz[self.bonds[:, 0]] - xyz[self.bonds[:, 1]], axis=-1)
        dev = d - self.r0
        off = np.abs(dev) > BOND_OUTLIER_FRACTION * self.r0
        return int(off.sum()), float(np.sqrt(np.mean(dev ** 2))) if len(dev) else 0.0, off

    def describe_bond(self, k, xyz) -> str:
        i, j = self.bonds[k]
        d = float(np.linalg.norm(xyz[i] - xyz[j]))
        where = self.labels[self.residue_of_atom[i]]
        if self.residue_of_atom[j] != self.residue_of_atom[i]:
            where += " - " + self.labels[self.residue_of_atom[j]]
        return f"{self.atom_names[i]}-{self.atom_names[j]} {d:.2f} Å (r0 {self.r0[k]:.2f}) in {where}"

    def fill(self, report: FrameReport, before, after=None):
        """Set the before (and, with ``after``, the after) geometry fields of ``report``; mark it "damaged" when
        ``after`` has a D residue or a broken bond."""
        d0, cis0, breaks0 = self.d_residues(before), self.cis_peptides(before), self.peptide_breaks(before)
        report.d_residues_before, report.cis_before = len(d0), len(cis0)
        report.peptide_breaks_before = len(breaks0)
        report.bond_outliers_before, report.bond_rmsd_before, _ = self.bond_stats(before)
        if after is None:
            return report
        d1, cis1, breaks1 = self.d_residues(after), self.cis_peptides(after), self.peptide_breaks(after)
        report.d_residues_after, report.cis_after = len(d1), len(cis1)
        report.peptide_breaks_after = len(breaks1)
        report.bond_outliers_after, report.bond_rmsd_after, off = self.bond_stats(after)
        gained_d = [self.labels[r] for r in np.setdiff1d(d1, d0)]
        kept_d = [self.labels[r] for r in np.intersect1d(d1, d0)]
        report.new_d_residues = _labels(gained_d)
        report.new_cis = _labels(self.labels[r] for r in np.setdiff1d(cis1, cis0))
        d = np.linalg.norm(after[self.bonds[:, 0]] - after[self.bonds[:, 1]], axis=-1)
        worst_first = np.flatnonzero(off)[np.argsort(-np.abs(d - self.r0)[off] / self.r0[off], kind="stable")]
        broken = [self.describe_bond(k, after) for k in worst_first]
        broken += [f"peptide C-N before {self.labels[r]}" for r in breaks1
                   if not any(self.labels[r] in b for b in broken)]
        report.broken_bonds = _labels(broken)
        reasons = []
        if gained_d:
            reasons.append(f"relaxation made D residue(s): {_labels(gained_d)}")
        if kept_d:
            reasons.append(f"D residue(s) of the input kept: {_labels(kept_d)}")
        if broken:
            reasons.append(f"broken bond(s) after relaxation: {_labels(broken, 3)}")
        if reasons:
            report.status, report.reason = "damaged", "; ".join(reasons)
        return report


def clash_metrics(xyz: np.ndarray, residue_of: np.ndarray, chain_of: np.ndarray, bonds: np.ndarray):
    """DESIGN.md clash metrics of heavy atoms (``latcpb.metrics.structure.clash_scores``, the benchmark's).

    xyz [M, 3] Å; residue_of/chain_of [M] residue and chain ordinals (residues numbered 0..N-1 in order);
    bonds [B, 2] covalent pairs. Returns (% residues with a pair < 1.2 Å to a non-adjacent residue,
    100 x non-bonded pairs < 1.2 Å / non-bonded pairs < 5 Å); NaN for non-finite coordinates.
    """
    if not np.isfinite(xyz).all():
        return math.nan, math.nan
    n_res = int(residue_of.max()) + 1 if len(residue_of) else 0
    chain_of_res = np.full(n_res, -1)
    chain_of_res[residue_of] = chain_of
    previous = np.arange(n_res) - 1
    previous[0] = -1
    previous[1:][chain_of_res[1:] != chain_of_res[:-1]] = -1
    keyed = np.sort(np.asarray(bonds, dtype=np.int64).reshape(-1, 2), axis=1)
    pct, score = clash_scores(np.asarray(xyz, dtype=np.float64), residue_of, keyed, n_res, previous)
    return float(pct), float(score)


def summarize(reports) -> dict:
    """Summary of a list of FrameReport: frame counts by status and means over the frames that relaxed."""
    relaxed = [r for r in reports if r.status in ("ok", "damaged")]

    def mean(name):
        vals = [getattr(r, name) for r in relaxed if math.isfinite(getattr(r, name))]
        return float(np.mean(vals)) if vals else None

    summary = {"frames": len(reports), "ok": sum(r.status == "ok" for r in reports),
               "failed": sum(r.status != "ok" for r in reports),
               "damaged": sum(r.status == "damaged" for r in reports),
               "not_relaxed": sum(r.status == "failed" for r in reports),
               "frames_with_d_residues_after": sum(r.d_residues_after > 0 for r in relaxed),
               "frames_with_broken_bonds_after": sum(bool(r.broken_bonds) for r in relaxed),
               "frames_with_new_cis": sum(bool(r.new_cis) for r in relaxed)}
    for name in ("energy_before", "energy_after", "clash_residues_before", "clash_residues_after",
                 "clash_score_before", "clash_score_after", "ca_drift_rms", "bond_outliers_before",
                 "bond_outliers_after", "d_residues_before", "d_residues_after", "cis_before", "cis_after",
                 "seconds"):
        summary[f"mean_{name}"] = mean(name)
    return summary


def write_report(reports, path):
    """Write FrameReports as JSON ({"summary", "frames"}) for a .json path or CSV (one row per frame) for .csv."""
    path = os.fspath(path)
    ext = os.path.splitext(path)[1].lower()
    if ext not in (".json", ".csv"):
        raise LatcpbInputError(f"report file {path}: use a .json or .csv extension")
    rows = [r.to_dict() if isinstance(r, FrameReport) else dict(r) for r in reports]
    partial = f"{path}.partial"  # written whole, then renamed into place
    try:
        with open(partial, "w", newline="") as fh:
            if ext == ".json":
                summary = summarize([r if isinstance(r, FrameReport) else FrameReport(**r) for r in reports])
                json.dump({"summary": summary, "frames": rows}, fh, indent=1, allow_nan=False)
            else:
                writer = csv.DictWriter(fh, fieldnames=[f.name for f in fields(FrameReport)])
                writer.writeheader()
                writer.writerows(rows)
        os.replace(partial, path)
    finally:
        if os.path.exists(partial):
            os.unlink(partial)
    return path
