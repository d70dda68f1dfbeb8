"""Restrained energy minimisation of backmapped structures with OpenMM, frame by frame, with a per-frame report.

Positions are Å [A, 3] (numpy) in this module's API; nm only inside the OpenMM calls.
"""
from __future__ import annotations

import csv
import json
import math
import os
import time
from dataclasses import asdict, dataclass, fields

import numpy as np
import openmm as mm
import openmm.app as app
import openmm.unit as unit

from latcpb.errors import LatcpbInputError
from latcpb.metrics.structure import clash_scores
from latcpb_openmm.topology import (HeavyStructure, HydrogenPlacer, add_hydrogens, heavy_structure,
                                    load_forcefield, topology_to_universe)

# Defaults chosen by measurement (docs/openmm.md): ~200 residues relax in a few seconds per frame on 2 CPU cores.
DEFAULT_FORCEFIELD = "amber14"
DEFAULT_SOLVENT = "vacuum"
DEFAULT_RESTRAINT_K = 1000.0     # kJ/mol/Å^2 on each CA (1e5 kJ/mol/nm^2)
DEFAULT_MAX_ITERATIONS = 500
DEFAULT_TOLERANCE = 10.0         # kJ/mol/nm, RMS force at which the minimiser stops
DEFAULT_CUTOFF = 10.0            # Å, non-bonded cutoff (CutoffNonPeriodic, reaction field beyond)
BOND_OUTLIER_FRACTION = 0.10     # |d - r0| > 10 % of the force field's r0
_RESTRAINT_GROUP = 31


@dataclass
class FrameReport:
    """Outcome of relaxing one frame (JSON-serialisable via ``to_dict``).

    Energies kJ/mol (force field only, restraint excluded); clash_residues_*: % residues with a heavy-atom pair
    < 1.2 Å to a non-adjacent residue; clash_score_*: 100 x non-bonded heavy pairs < 1.2 Å / pairs < 5 Å;
    ca_drift_rms/max: CA displacement (Å); bond_outliers_*: heavy-atom bonds off the force field length by > 10 %;
    bond_rmsd_*: RMS heavy-atom bond-length deviation from the force field (Å); status "ok" or "failed" (the frame
    is then returned unrelaxed, reason says why).
    """

    frame: int
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
    n_atoms: int = 0
    seconds: float = 0.0

    def to_dict(self) -> dict:
        """Plain dict; non-finite floats become None (valid JSON)."""
        return {k: (None if isinstance(v, float) and not math.isfinite(v) else v) for k, v in asdict(self).items()}


def choose_platform(platform=None) -> mm.Platform:
    """OpenMM platform by name ("CPU", "CUDA", "OpenCL", "Reference"), or the fastest available when None."""
    names = [mm.Platform.getPlatform(i).getName() for i in range(mm.Platform.getNumPlatforms())]
    if platform is None:
        return max((mm.Platform.getPlatform(i) for i in range(len(names))), key=lambda p: p.getSpeed())
    if isinstance(platform, mm.Platform):
        return platform
    if platform not in names:
        raise LatcpbInputError(f"OpenMM platform {platform!r} is not available here; available: {', '.join(names)}")
    return mm.Platform.getPlatformByName(platform)


def create_system(forcefield: app.ForceField, top: app.Topology, solvent: str, cutoff=DEFAULT_CUTOFF,
                  constraints=None) -> mm.System:
    """System for a hydrogenated topology: CutoffNonPeriodic at ``cutoff`` Å (NoCutoff when None)."""
    kw = {"constraints": constraints, "rigidWater": False}
    if cutoff is None:
        kw["nonbondedMethod"] = app.NoCutoff
    else:
        kw.update(nonbondedMethod=app.CutoffNonPeriodic, nonbondedCutoff=cutoff * 0.1 * unit.nanometer)
    try:
        return forcefield.createSystem(top, **kw)
    except ValueError as err:
        raise LatcpbInputError(f"OpenMM cannot parametrise the structure: {err}") from err


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


class Relaxer:
    """Restrained minimiser for the frames of one AtomGroup (system and context built once, at the first frame).

    atoms: MDAnalysis AtomGroup (heavy atoms, PDB names); other arguments as ``relax_universe``.
    ``relax_frame(xyz [A, 3] Å)`` -> (relaxed [A, 3] Å for ``atoms``, hydrogenated [T, 3] Å, FrameReport).
    """

    def __init__(self, atoms, forcefield=DEFAULT_FORCEFIELD, solvent=DEFAULT_SOLVENT,
                 restraint_k=DEFAULT_RESTRAINT_K, max_iterations=DEFAULT_MAX_ITERATIONS,
                 tolerance=DEFAULT_TOLERANCE, platform=None, ph=7.0, histidine="auto", cutoff=DEFAULT_CUTOFF,
                 source="input"):
        if restraint_k is None or restraint_k < 0:
            raise LatcpbInputError(f"restraint_k must be >= 0 kJ/mol/Å^2, not {restraint_k}")
        if max_iterations is None or int(max_iterations) < 0:
            raise LatcpbInputError(f"max_iterations must be >= 0 (0: until converged), not {max_iterations}")
        self.atoms = atoms
        self.solvent = solvent
        self.forcefield = load_forcefield(forcefield, solvent)
        self.restraint_k = float(restraint_k)
        self.max_iterations = int(max_iterations)
        self.tolerance = float(tolerance)
        self.platform = choose_platform(platform)
        self.ph = ph
        self.cutoff = cutoff
        self.source = source
        self.hs: HeavyStructure = heavy_structure(atoms, histidine=histidine, source=source)
        self.topology = None      # hydrogenated openmm Topology, built at the first frame
        self.context = None

    # -- set-up ---------------------------------------------------------------------------------------------
    def _setup(self, heavy: np.ndarray):
        """Hydrogens (Modeller), System, restraint and Context from the first frame's heavy atoms [M, 3] Å."""
        top, pos, heavy_index, variants = add_hydrogens(self.hs, heavy, self.forcefield, ph=self.ph)
        self.topology, self.variants, self.heavy_index = top, variants, heavy_index
        self.placer = HydrogenPlacer(top, pos)
        system = create_system(self.forcefield, top, self.solvent, self.cutoff)
        self.ca_index = np.array([a.index for a in top.atoms() if a.name == "CA"
                                  and a.residue.name != "HOH"], dtype=np.int64)
        restraint = mm.CustomExternalForce("0.5*k_ca*((x-x0)^2+(y-y0)^2+(z-z0)^2)")
        restraint.addGlobalParameter("k_ca", self.restraint_k * 100.0)  # kJ/mol/Å^2 -> kJ/mol/nm^2
        for name in ("x0", "y0", "z0"):
            restraint.addPerParticleParameter(name)
        for i in self.ca_index:
            restraint.addParticle(int(i), [0.0, 0.0, 0.0])
        restraint.setForceGroup(_RESTRAINT_GROUP)
        system.addForce(restraint)
        self.restraint = restraint
        self.system = system
        # bond table of heavy atoms (force-field lengths) for the report
        bonds, r0 = [], []
        for force in system.getForces():
            if isinstance(force, mm.HarmonicBondForce):
                for k in range(force.getNumBonds()):
                    i, j, length, _ = force.getBondParameters(k)
                    bonds.append((i, j))
                    r0.append(length.value_in_unit(unit.angstrom))
        atoms = list(top.atoms())
        heavy_mask = np.array([a.element is None or a.element.symbol != "H" for a in atoms])
        bonds = np.asarray(bonds, dtype=np.int64).reshape(-1, 2)
        keep = heavy_mask[bonds[:, 0]] & heavy_mask[bonds[:, 1]]
        self.bonds, self.bond_r0 = bonds[keep], np.asarray(r0)[keep]
        heavy_atoms = np.nonzero(heavy_mask)[0]
        self.heavy_atoms = heavy_atoms
        remap = -np.ones(len(atoms), dtype=np.int64)
        remap[heavy_atoms] = np.arange(len(heavy_atoms))
        self.heavy_bonds_local = remap[self.bonds]
        self.residue_of = np.array([atoms[i].residue.index for i in heavy_atoms])
        self.chain_of = np.array([atoms[i].residue.chain.index for i in heavy_atoms])
        integrator = mm.VerletIntegrator(0.001)
        self.context = mm.Context(system, integrator, self.platform)
        self._groups = sum(1 << g for g in range(32) if g != _RESTRAINT_GROUP)

    # -- one frame ------------------------------------------------------------------------------------------
    def _energy(self) -> float:
        state = self.context.getState(getEnergy=True, groups=self._groups)
        return state.getPotentialEnergy().value_in_unit(unit.kilojoule_per_mole)

    def _bond_stats(self, xyz):
        d = np.linalg.norm(xyz[self.bonds[:, 0]] - xyz[self.bonds[:, 1]], axis=-1)
        dev = d - self.bond_r0
        return int(np.sum(np.abs(dev) > BOND_OUTLIER_FRACTION * self.bond_r0)), float(np.sqrt(np.mean(dev ** 2)))

    def _clashes(self, xyz):
        return clash_metrics(xyz[self.heavy_atoms], self.residue_of, self.chain_of, self.heavy_bonds_local)

    def relax_frame(self, xyz: np.ndarray, frame: int = 0):
        """Relax one frame: input positions [A, 3] Å -> (relaxed [A, 3] Å, with hydrogens [T, 3] Å, FrameReport).

        A frame with non-finite input, a minimiser exception or a non-finite result is returned unrelaxed with
        ``status == "failed"``.
        """
        t0 = time.perf_counter()
        xyz = np.asarray(xyz, dtype=np.float64)
        report = FrameReport(frame=frame)
        out = xyz.copy()
        heavy = self.hs.positions(xyz)
        if not np.isfinite(heavy).all():
            report.status, report.reason = "failed", "non-finite (NaN or inf) input coordinates"
            if self.topology is not None:
                full = np.full((self.topology.getNumAtoms(), 3), np.nan)
                full[self.heavy_index] = heavy
                report.n_atoms = len(full)
                return out, full, report
            return out, None, report
        if self.context is None:
            self._setup(heavy)
        full = np.zeros((self.topology.getNumAtoms(), 3))
        full[self.heavy_index] = heavy
        full = self.placer.place(full)
        report.n_atoms = len(full)
        report.clash_residues_before, report.clash_score_before = self._clashes(full)
        report.bond_outliers_before, report.bond_rmsd_before = self._bond_stats(full)
        try:
            for k, i in enumerate(self.ca_index):
                self.restraint.setParticleParameters(k, int(i), (full[i] * 0.1).tolist())
            self.restraint.updateParametersInContext(self.context)
            self.context.setPositions(unit.Quantity(full * 0.1, unit.nanometer))
            report.energy_before = self._energy()
            mm.LocalEnergyMinimizer.minimize(self.context, self.tolerance, self.max_iterations)
            state = self.context.getState(getPositions=True, getEnergy=True, groups=self._groups)
            relaxed = np.asarray(state.getPositions(asNumpy=True).value_in_unit(unit.nanometer)) * 10.0
            energy = state.getPotentialEnergy().value_in_unit(unit.kilojoule_per_mole)
        except Exception as err:  # OpenMMException (NaN coordinates, ...) must not end a trajectory
            report.status, report.reason = "failed", f"minimisation raised: {err}".strip()
            report.seconds = time.perf_counter() - t0
            return out, full, report
        if not (math.isfinite(energy) and np.isfinite(relaxed).all()):
            report.status, report.reason = "failed", "minimisation gave non-finite energy or coordinates"
            report.seconds = time.perf_counter() - t0
            return out, full, report
        report.energy_after = energy
        report.clash_residues_after, report.clash_score_after = self._clashes(relaxed)
        report.bond_outliers_after, report.bond_rmsd_after = self._bond_stats(relaxed)
        drift = np.linalg.norm(relaxed[self.ca_index] - full[self.ca_index], axis=-1)
        report.ca_drift_rms = float(np.sqrt(np.mean(drift ** 2))) if len(drift) else 0.0
        report.ca_drift_max = float(drift.max()) if len(drift) else 0.0
        have = self.hs.source_index >= 0
        out[self.hs.source_index[have]] = relaxed[self.heavy_index[have]]
        report.seconds = time.perf_counter() - t0
        return out, relaxed, report

    def relax_universe(self, universe, hydrogens=False, progress=True, start=None, stop=None, step=None,
                       frame_offset=0):
        """Relax the frames of ``universe`` (same atoms as this Relaxer's; set-up reused across calls, e.g. for
        batches of one trajectory). Returns (in-memory Universe, list[FrameReport]) as ``relax_universe``;
        report frame numbers are the frame indices plus ``frame_offset``."""
        from tqdm.auto import tqdm

        atoms = universe.atoms
        if len(atoms) != len(self.atoms):
            raise LatcpbInputError(f"{self.source}: this Relaxer was built for {len(self.atoms)} atoms, "
                                   f"got {len(atoms)}")
        trajectory = atoms.universe.trajectory
        frames = list(range(len(trajectory)))[slice(start, stop, step)]
        heavy_out, full_out, dims, reports = [], [], [], []
        for index in tqdm(frames, desc="relax", unit="frame", disable=not progress):
            ts = trajectory[index]
            out, full, report = self.relax_frame(atoms.positions, frame=index + frame_offset)
            heavy_out.append(out)
            full_out.append(full)
            dims.append(ts.dimensions)
            reports.append(report)
        if not hydrogens:
            return _with_frames(atoms, np.stack(heavy_out), dims), reports
        if self.topology is None:
            raise LatcpbInputError(f"{self.source}: every frame has non-finite coordinates; nothing to hydrogenate")
        n_total = self.topology.getNumAtoms()
        full_out = [f if f is not None else np.full((n_total, 3), np.nan) for f in full_out]
        return topology_to_universe(self.topology, np.stack(full_out)), reports


def relax_universe(universe, forcefield=DEFAULT_FORCEFIELD, solvent=DEFAULT_SOLVENT, hydrogens=False,
                   restraint_k=DEFAULT_RESTRAINT_K, max_iterations=DEFAULT_MAX_ITERATIONS,
                   tolerance=DEFAULT_TOLERANCE, platform=None, ph=7.0, progress=True, histidine="auto",
                   cutoff=DEFAULT_CUTOFF, start=None, stop=None, step=None):
    """Relax every frame of an all-atom Universe (or AtomGroup) with CA-restrained minimisation.

    forcefield: "amber14" | "amber99sbildn" | "amber19" | "charmm36" (or a list of OpenMM XML files);
    solvent: "vacuum" | "obc" | "gbn2"; hydrogens: keep the added hydrogens in the output; restraint_k kJ/mol/Å^2
    per CA; max_iterations (0: no cap); tolerance kJ/mol/nm; platform: "CPU"/"CUDA"/"OpenCL"/None (fastest);
    ph, histidine ("auto"/"HID"/"HIE"/"HIP"); cutoff Å (None: no cutoff).
    Returns (in-memory Universe, list[FrameReport]): the input topology with relaxed positions, or with
    ``hydrogens=True`` the hydrogenated topology. Failed frames are kept unrelaxed and flagged in their report.
    """
    atoms = universe.atoms
    relaxer = Relaxer(atoms, forcefield=forcefield, solvent=solvent, restraint_k=restraint_k,
                      max_iterations=max_iterations, tolerance=tolerance, platform=platform, ph=ph,
                      histidine=histidine, cutoff=cutoff, source=_source_name(atoms))
    return relaxer.relax_universe(atoms, hydrogens=hydrogens, progress=progress, start=start, stop=stop, step=step)


def relax(structure, **kwargs):
    """``relax_universe`` for a Universe, an AtomGroup or a structure file path (read with MDAnalysis)."""
    if isinstance(structure, (str, os.PathLike)):
        import MDAnalysis as mda
        try:
            structure = mda.Universe(os.fspath(structure))
        except (OSError, ValueError) as err:
            raise LatcpbInputError(f"cannot read {structure}: {err}") from err
    return relax_universe(structure, **kwargs)


def _source_name(atoms) -> str:
    try:
        return os.path.basename(atoms.universe.filename or "input")
    except AttributeError:
        return "input"


def _with_frames(atoms, xyz: np.ndarray, dims):
    """In-memory copy of ``atoms`` (its topology) carrying frames ``xyz`` [F, A, 3] Å."""
    import MDAnalysis as mda
    from MDAnalysis.coordinates.memory import MemoryReader

    u = mda.Merge(atoms)
    d = None if any(x is None for x in dims) else np.asarray(dims, dtype=np.float32)
    u.load_new(xyz.astype(np.float32), format=MemoryReader, dimensions=d)
    return u


def summarize(reports) -> dict:
    """Summary of a list of FrameReport: frame counts and means over the frames that relaxed."""
    ok = [r for r in reports if r.status == "ok"]

    def mean(name):
        vals = [getattr(r, name) for r in ok if math.isfinite(getattr(r, name))]
        return float(np.mean(vals)) if vals else None

    summary = {"frames": len(reports), "failed": len(reports) - len(ok)}
    for name in ("energy_before", "energy_after", "clash_residues_before", "clash_residues_after",
                 "clash_score_before", "clash_score_after", "ca_drift_rms", "bond_outliers_before",
                 "bond_outliers_after", "seconds"):
        summary[f"mean_{name}"] = mean(name)
    return summary


def write_report(reports, path):
    """Write FrameReports as JSON ({"summary", "frames"}) for a .json path or CSV (one row per frame) for .csv."""
    path = os.fspath(path)
    ext = os.path.splitext(path)[1].lower()
    rows = [r.to_dict() if isinstance(r, FrameReport) else dict(r) for r in reports]
    if ext == ".json":
        summary = summarize([r if isinstance(r, FrameReport) else FrameReport(**r) for r in reports])
        with open(path, "w") as fh:
            json.dump({"summary": summary, "frames": rows}, fh, indent=1, allow_nan=False)
    elif ext == ".csv":
        with open(path, "w", newline="") as fh:
            writer = csv.DictWriter(fh, fieldnames=[f.name for f in fields(FrameReport)])
            writer.writeheader()
            writer.writerows(rows)
    else:
        raise LatcpbInputError(f"report file {path}: use a .json or .csv extension")
    return path
