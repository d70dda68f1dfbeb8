"""``evaluate``: every metric of DESIGN.md "Metrics" for a reference and a generated Universe (means over frames).

Frames: the generated trajectory holds ``samples`` frames per reference frame, frame-major (reference frame f ->
generated frames f*samples .. f*samples + samples - 1).
"""
from __future__ import annotations

import math

import numpy as np

from latcpb.data.symmetry import canonical_symmetric, closest_symmetric
from latcpb.errors import LatcpbInputError
from latcpb.metrics import structure as st
from latcpb.metrics import torsions as tor
from latcpb.metrics import validity as val
from latcpb.metrics.matching import MatchedSystem, match_systems

RMSD_SETS = ("heavy", "backbone", "sidechain")


def _atoms(obj):
    """AtomGroup of a Universe or AtomGroup."""
    return obj.atoms if hasattr(obj, "atoms") else obj


def _clean(value):
    """float for JSON: nan/inf -> None."""
    if value is None:
        return None
    value = float(value)
    return value if math.isfinite(value) else None


def _nanmean(values) -> float:
    arr = np.asarray(values, dtype=np.float64)
    arr = arr[np.isfinite(arr)]
    return float(arr.mean()) if arr.size else float("nan")


class _FrameScorer:
    """Per-frame metrics of one generated frame against one reference frame (matched atoms)."""

    def __init__(self, matched: MatchedSystem, first_ref_slots: np.ndarray | None = None):
        self.m = matched
        disulfides = (val.find_disulfides(first_ref_slots, matched.mask, matched.restype)
                      if first_ref_slots is not None else None)
        # bond graph, angles and planar groups of the matched atoms; disulfides as the reference has them
        self.validity = val.validity_topology(matched.restype, matched.mask, matched.previous, disulfides)
        self.sets = st.atom_sets(matched)
        flat_mask = matched.mask.ravel()
        self.flat_mask = flat_mask
        self.radii = st.atom_radii(matched.elements.ravel()[flat_mask])
        self.residue_of_atom = np.repeat(np.arange(matched.n_residues), matched.mask.sum(-1))
        self.previous = matched.previous

    def reference(self, ref_slots: np.ndarray) -> dict:
        """Quantities of a reference frame reused by all its samples."""
        flat = ref_slots.reshape(-1, 3)[self.flat_mask]
        _, _, omega, _, _, omega_mask = tor.backbone_torsions(ref_slots, self.m.mask, self.previous)
        return {"slots": ref_slots, "flat": flat, "bonds": st.perceive_bonds(flat, self.radii),
                "cis": tor.cis_peptides(omega, omega_mask, self.m.restype)}

    def score(self, ref: dict, gen_slots: np.ndarray) -> dict:
        m, mask = self.m, self.m.mask
        ref_slots, ref_flat, ref_bonds = ref["slots"], ref["flat"], ref["bonds"]
        gen_flat = gen_slots.reshape(-1, 3)[self.flat_mask]
        out = {}
        for name, sel in self.sets.items():
            base, suffix = (name.split("_with_termini")[0], "_with_termini") if "_with" in name else (name, "")
            out[f"rmsd_{base}{suffix}"] = st.rmsd(ref_slots, gen_slots, sel)
            out[f"rmsd_{base}_superposed{suffix}"] = st.superposed_rmsd(ref_slots, gen_slots, sel)
        out["ca_rmsd"] = st.ca_rmsd(ref_slots, gen_slots, mask)
        gen_bonds = st.perceive_bonds(gen_flat, self.radii)
        out["ged_signed"], out["ged_corrected"] = st.graph_edit_distance(ref_bonds, gen_bonds, len(gen_flat))
        out["clash_residue_pct"], out["clash_pair_pct"] = st.clash_scores(
            gen_flat, self.residue_of_atom, ref_bonds, m.n_residues, self.previous)
        out["bond_score"], out["bond_rmsd"] = st.bond_length_scores(ref_flat, gen_flat, ref_bonds)
        d_res = st.d_residues(gen_slots, mask)
        out["d_residues"] = float(d_res.sum())
        chiral = mask[:, [0, 1, 2, 4]].all(-1)
        out["d_residue_pct"] = 100.0 * d_res.sum() / max(chiral.sum(), 1)
        _, _, omega, _, _, omega_mask = tor.backbone_torsions(gen_slots, mask, self.previous)
        cis = tor.cis_peptides(omega, omega_mask, m.restype)
        out["cis_peptides"] = float(cis.sum())
        out["cis_peptides_spurious"] = float((cis & ~ref["cis"]).sum())  # cis where the reference is trans
        out.update(val.score_validity(self.validity, gen_slots, ref_slots))
        return out

    def reference_only(self, ref_slots: np.ndarray) -> dict:
        """Chirality and cis counts of the reference itself (context for the generated values)."""
        _, _, omega, _, _, omega_mask = tor.backbone_torsions(ref_slots, self.m.mask, self.previous)
        out = {"d_residues_ref": float(st.d_residues(ref_slots, self.m.mask).sum()),
               "cis_peptides_ref": float(tor.cis_peptides(omega, omega_mask, self.m.restype).sum())}
        out.update({f"ref_{k}": v for k, v in val.score_validity(self.validity, ref_slots).items()})
        return out


def evaluate(ref_universe, gen_universe, samples: int = 1, keep_torsions: bool = False,
             ref_source: str = "reference", gen_source: str = "generated", progress: bool = False) -> dict:
    """Score a generated structure/trajectory against a reference one; returns every metric as a dict.

    ref_universe, gen_universe: MDAnalysis Universes (or AtomGroups) with heavy atoms (hydrogens ignored).
    The generated trajectory must hold ``samples`` frames per reference frame (frame-major). Scalars are means
    over generated frames (None where undefined); ``per_residue`` holds the heavy-atom RMSD (Å, no
    superposition, all frames) of each matched residue; ``torsion_counts`` the histograms behind ``kl_*``
    ({torsion: {"reference", "generated": counts [36]}}, to pool over systems); ``keep_torsions`` adds
    ``torsions`` (degrees, numpy) for plots. Raises ``LatcpbInputError`` on frame-count or residue mismatches.
    """
    if samples < 1:
        raise LatcpbInputError(f"samples must be >= 1 (got {samples})")
    ref_atoms, gen_atoms = _atoms(ref_universe), _atoms(gen_universe)
    ref_traj, gen_traj = ref_atoms.universe.trajectory, gen_atoms.universe.trajectory
    n_ref, n_gen = len(ref_traj), len(gen_traj)
    if n_gen != n_ref * samples:
        raise LatcpbInputError(
            f"{gen_source}: {n_gen} frames, expected {n_ref} reference frames x {samples} samples = {n_ref * samples}")
    ref_traj[0]
    gen_traj[0]
    matched = match_systems(ref_atoms, gen_atoms, ref_source, gen_source)
    scorer = _FrameScorer(matched, matched.slots(ref_atoms.positions, "ref"))
    heavy = scorer.sets["heavy_with_termini"]
    per_frame: dict[str, list] = {}
    ref_only: dict[str, list] = {}
    sq_sum = np.zeros(matched.n_residues)
    sq_count = np.zeros(matched.n_residues)
    ref_tors = {k: [] for k in tor.TORSIONS}
    gen_tors = {k: [] for k in tor.TORSIONS}
    gg, gr = [], []
    frames = range(n_ref)
    if progress:
        from tqdm import tqdm
        frames = tqdm(frames, desc="evaluate", unit="frame")
    for f in frames:
        ref_traj[f]
        ref_slots = matched.slots(ref_atoms.positions, "ref")
        ref = scorer.reference(ref_slots)
        for k, v in scorer.reference_only(ref_slots).items():
            ref_only.setdefault(k, []).append(v)
        # torsion histograms see symmetric side chains in their canonical naming (chi2 of PHE folded ...)
        canonical = canonical_symmetric(ref_slots, matched.restype, matched.mask)
        for k, (ang, _) in tor.torsion_set(canonical, matched.mask, matched.restype, matched.previous).items():
            ref_tors[k].append(ang)
        samples_xyz = []
        for s in range(samples):
            gen_traj[f * samples + s]
            # equivalent atoms of symmetric side chains (ASP OD1/OD2 ...) named as the reference names them
            gen_slots = closest_symmetric(matched.slots(gen_atoms.positions, "gen"), ref_slots, matched.restype,
                                          matched.mask)
            for k, v in scorer.score(ref, gen_slots).items():
                per_frame.setdefault(k, []).append(v)
            a, c = st.per_residue_squared_deviation(ref_slots, gen_slots, heavy)
            sq_sum += a
            sq_count += c
            canonical = canonical_symmetric(gen_slots, matched.restype, matched.mask)
            for k, (ang, _) in tor.torsion_set(canonical, matched.mask, matched.restype, matched.previous).items():
                gen_tors[k].append(ang)
            samples_xyz.append(gen_slots[heavy])
        if samples > 1:
            for i in range(samples):
                gr.append(st.rmsd(ref_slots[heavy], samples_xyz[i]))
                for j in range(i + 1, samples):
                    gg.append(st.rmsd(samples_xyz[i], samples_xyz[j]))
    result = {"n_reference_frames": n_ref, "n_generated_frames": n_gen, "samples": samples,
              "n_reference_residues": matched.n_ref_residues, "n_residues": matched.n_residues,
              "n_matched_atoms": int(matched.mask.sum()), "n_reference_atoms": matched.n_ref_atoms,
              "coverage": matched.coverage}
    for k, v in per_frame.items():
        result[k] = _clean(_nanmean(v))
    for k, v in ref_only.items():
        result[k] = _clean(_nanmean(v))
    masks = {k: m for k, (_, m) in tor.torsion_set(np.zeros((matched.n_residues, 15, 3)), matched.mask,
                                                     matched.restype, matched.previous).items()}
    kls, torsion_counts = {}, {}
    torsions_deg = {"reference": {}, "generated": {}}
    for k in tor.TORSIONS:
        r = np.stack(ref_tors[k])[:, masks[k]]
        g = np.stack(gen_tors[k])[:, masks[k]]
        counts = {"reference": tor.histogram(r), "generated": tor.histogram(g)}
        kls[k] = tor.kl_divergence(counts["reference"], counts["generated"])
        result[f"kl_{k}"] = _clean(kls[k])
        torsion_counts[k] = {side: [int(c) for c in v] for side, v in counts.items()}
        if keep_torsions:
            torsions_deg["reference"][k] = np.rad2deg(np.stack(ref_tors[k]))
            torsions_deg["generated"][k] = np.rad2deg(np.stack(gen_tors[k]))
    result["torsion_kl"] = _clean(_nanmean(list(kls.values())))
    result["torsion_counts"] = torsion_counts
    if samples > 1:
        mean_gr = float(np.mean(gr))
        result["diversity"] = _clean(1.0 - float(np.mean(gg)) / mean_gr) if mean_gr > 0 else None
        result["rmsd_gen_gen"] = _clean(float(np.mean(gg)))
        result["rmsd_gen_ref"] = _clean(mean_gr)
    else:
        result["diversity"] = None
    per_res = np.sqrt(sq_sum / np.maximum(sq_count, 1))
    result["per_residue"] = {
        "chain_ids": [str(c) for c in matched.chain_ids], "resids": [int(r) for r in matched.resids],
        "resnames": [str(r) for r in matched.resnames], "terminal": [bool(t) for t in matched.terminal],
        "rmsd": [_clean(v) if c else None for v, c in zip(per_res, sq_count)]}
    if keep_torsions:
        torsions_deg["masks"] = masks
        result["torsions"] = torsions_deg
    return result
