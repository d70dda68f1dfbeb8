"""Restrained energy minimisation of backmapped structures with OpenMM, frame by frame, with a per-frame report.

Positions are Å [A, 3] (numpy) in this module's API; nm only inside the OpenMM calls. Every frame keeps its time
(ps) and box. ``relax_block`` is the entry point for worker processes (picklable inputs and outputs, one OpenMM
Context per worker process).
"""
from __future__ import annotations

import hashlib
import io
import math
import os
import time
import warnings

import numpy as np
import openmm as mm
import openmm.app as app
import openmm.unit as unit

from latcpb.errors import LatcpbInputError
from latcpb_openmm.convert import HeavyStructure, heavy_structure, load_frames, topology_to_universe
from latcpb_openmm.forcefields import load_forcefield
from latcpb_openmm.hydrogens import DegenerateGeometryError, HydrogenPlacer, add_hydrogens
from latcpb_openmm.report import (BOND_OUTLIER_FRACTION, FrameReport, StructureChecks, clash_metrics,  # noqa: F401
                                  summarize, write_report)

# Defaults chosen by measurement (docs/openmm.md): ~200 residues relax in a few seconds per frame on 2 CPU cores.
DEFAULT_FORCEFIELD = "amber14"
DEFAULT_SOLVENT = "vacuum"
DEFAULT_RESTRAINT_K = 1000.0     # kJ/mol/Å^2 on each CA (1e5 kJ/mol/nm^2)
DEFAULT_MAX_ITERATIONS = 500
DEFAULT_TOLERANCE = 10.0         # kJ/mol/nm, RMS force at which the minimiser stops
DEFAULT_CUTOFF = 10.0            # Å, non-bonded cutoff (CutoffNonPeriodic, reaction field beyond)
DEFAULT_CHIRALITY_K = 1000.0     # kJ/mol/rad^2, L-chirality guard k (|theta - theta_L| - 30°)^2 beyond 30°
L_DIHEDRAL = -123.4              # degrees, N-CA-C-CB of L residues (T0922: -123.4 ± 2.8; D: about +123)
CHIRALITY_FREE = 30.0            # degrees from L_DIHEDRAL within which the guard exerts no force
PLATFORM_ORDER = ("CUDA", "OpenCL", "CPU", "Reference")  # fastest first; platform=None takes the first that works
_RESTRAINT_GROUP = 31


def available_platforms() -> list:
    """Names of the OpenMM platforms this installation has, fastest first (``PLATFORM_ORDER``, then others)."""
    names = [mm.Platform.getPlatform(i).getName() for i in range(mm.Platform.getNumPlatforms())]
    return [n for n in PLATFORM_ORDER if n in names] + [n for n in names if n not in PLATFORM_ORDER]


def choose_platform(platform=None) -> mm.Platform:
    """OpenMM platform by name ("CUDA", "OpenCL", "CPU", "Reference"), or the fastest available when None.

    (Whether a GPU platform can really open a Context is only known when one is made: ``create_context`` falls
    back along ``PLATFORM_ORDER``.)
    """
    if isinstance(platform, mm.Platform):
        return platform
    names = available_platforms()
    if platform is None:
        return mm.Platform.getPlatformByName(names[0])
    if platform not in names:
        raise LatcpbInputError(f"OpenMM platform {platform!r} is not available here; available: {', '.join(names)}")
    return mm.Platform.getPlatformByName(platform)


def create_context(system: mm.System, make_integrator, platform=None, threads=None):
    """(Context, platform name) for ``system``; ``make_integrator()`` gives a fresh integrator per attempt.

    platform None: the first of CUDA, OpenCL, CPU, Reference that can open a Context here; a name or Platform:
    that one (errors are ``LatcpbInputError``). ``threads``: CPU platform threads (None: OpenMM's default).
    """
    candidates = [choose_platform(platform)] if platform is not None else [
        mm.Platform.getPlatformByName(n) for n in available_platforms()]
    errors = []
    for candidate in candidates:
        props = {"Threads": str(int(threads))} if threads and candidate.getName() == "CPU" else {}
        try:
            return mm.Context(system, make_integrator(), candidate, props), candidate.getName()
        except Exception as err:  # OpenMMException: no device, driver too old, ...
            errors.append(f"{candidate.getName()}: {str(err).strip()}")
    raise LatcpbInputError("no OpenMM platform could create a context (" + "; ".join(errors) + ")")


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


class Relaxer:
    """Restrained minimiser for the frames of one AtomGroup (hydrogens, System and Context built once).

    atoms: MDAnalysis AtomGroup (heavy atoms, PDB names); other arguments as ``relax_universe``. The set-up
    (protonation and hydrogen placement by Modeller) happens at ``prepare(xyz)``, or at the first frame that
    allows it; later frames rebuild their hydrogens from it. ``relax_frame(xyz [A, 3] Å)`` -> (relaxed [A, 3] Å for
    ``atoms``, hydrogenated [T, 3] Å, FrameReport).
    """

    def __init__(self, atoms, forcefield=DEFAULT_FORCEFIELD, solvent=DEFAULT_SOLVENT,
                 restraint_k=DEFAULT_RESTRAINT_K, max_iterations=DEFAULT_MAX_ITERATIONS,
                 tolerance=DEFAULT_TOLERANCE, platform=None, ph=7.0, histidine="auto", cutoff=DEFAULT_CUTOFF,
                 source="input", threads=None, chirality_k=DEFAULT_CHIRALITY_K):
        if restraint_k is None or restraint_k < 0:
            raise LatcpbInputError(f"restraint_k must be >= 0 kJ/mol/Å^2, not {restraint_k}")
        if max_iterations is None or int(max_iterations) < 0:
            raise LatcpbInputError(f"max_iterations must be >= 0 (0: until converged), not {max_iterations}")
        self.atoms = atoms
        self.solvent = solvent
        self.forcefield = load_forcefield(forcefield, solvent)
        self.restraint_k = float(restraint_k)
        self.chirality_k = float(chirality_k or 0.0)
        self.max_iterations = int(max_iterations)
        self.tolerance = float(tolerance)
        if platform is not None:
            choose_platform(platform)  # an unknown name fails here, before any work
        self.platform = platform
        self.platform_name = None  # the platform the Context runs on, once made
        self.threads = threads
        self.ph = ph
        self.cutoff = cutoff
        self.source = source
        self.hs: HeavyStructure = heavy_structure(atoms, histidine=histidine, source=source)
        self.topology = None      # hydrogenated openmm Topology, built at set-up
        self.context = None

    # -- set-up ---------------------------------------------------------------------------------------------
    def prepare(self, xyz=None, defer_degenerate=False):
        """Set up (hydrogens, System, restraint, Context) from reference positions ``xyz`` [A, 3] Å of ``atoms``
        (default: their current positions). Frames relaxed afterwards do not depend on which frame came first.
        ``defer_degenerate``: where the reference geometry admits no hydrogens (``DegenerateGeometryError``), leave
        the set-up to the first relaxed frame that admits them instead of raising."""
        xyz = np.asarray(self.atoms.positions if xyz is None else xyz, dtype=np.float64)
        heavy = self.hs.positions(xyz)
        if not np.isfinite(heavy).all():
            raise LatcpbInputError(f"{self.source}: non-finite reference coordinates for the OpenMM set-up")
        try:
            self._setup(heavy)
        except DegenerateGeometryError:
            if not defer_degenerate:
                raise
        return self

    def _setup(self, heavy: np.ndarray):
        """Hydrogens (Modeller), System, restraint and Context from heavy atoms [M, 3] Å."""
        top, pos, heavy_index, variants = add_hydrogens(self.hs, heavy, self.forcefield, ph=self.ph)
        system = create_system(self.forcefield, top, self.solvent, self.cutoff)
        self.topology, self.variants, self.heavy_index = top, variants, heavy_index
        self.placer = HydrogenPlacer(top, pos)
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
        if self.chirality_k > 0:  # keeps L residues L: a minimiser pushing through clashes can invert a CA
            guard = mm.CustomTorsionForce("k_chiral*max(0, d - d_free)^2; d = min(dt, 2*3.141592653589793 - dt);"
                                          " dt = abs(theta - theta_l)")
            guard.addGlobalParameter("k_chiral", self.chirality_k)
            guard.addGlobalParameter("theta_l", float(np.deg2rad(L_DIHEDRAL)))
            guard.addGlobalParameter("d_free", float(np.deg2rad(CHIRALITY_FREE)))
            for residue in top.residues():
                names = {a.name: a.index for a in residue.atoms()}
                if all(k in names for k in ("N", "CA", "C", "CB")):
                    guard.addTorsion(names["N"], names["CA"], names["C"], names["CB"], [])
            guard.setForceGroup(_RESTRAINT_GROUP)
            system.addForce(guard)
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
        self.checks = StructureChecks(top, bonds[keep], np.asarray(r0)[keep], self.hs.residue_labels)
        heavy_atoms = np.nonzero(heavy_mask)[0]
        self.heavy_atoms = heavy_atoms
        remap = -np.ones(len(atoms), dtype=np.int64)
        remap[heavy_atoms] = np.arange(len(heavy_atoms))
        self.heavy_bonds_local = remap[bonds[keep]]
        self.residue_of = np.array([atoms[i].residue.index for i in heavy_atoms])
        self.chain_of = np.array([atoms[i].residue.chain.index for i in heavy_atoms])
        self.context, self.platform_name = create_context(system, lambda: mm.VerletIntegrator(0.001),
                                                          self.platform, self.threads)
        self._groups = sum(1 << g for g in range(32) if g != _RESTRAINT_GROUP)

    # -- one frame ------------------------------------------------------------------------------------------
    def _energy(self) -> float:
        state = self.context.getState(getEnergy=True, groups=self._groups)
        return state.getPotentialEnergy().value_in_unit(unit.kilojoule_per_mole)

    def _clashes(self, xyz):
        return clash_metrics(xyz[self.heavy_atoms], self.residue_of, self.chain_of, self.heavy_bonds_local)

    def _unrelaxed(self, out, heavy, report, reason, t0):
        report.status, report.reason = "failed", reason
        report.seconds = time.perf_counter() - t0
        if self.topology is None:
            return out, None, report
        full = np.full((self.topology.getNumAtoms(), 3), np.nan)
        full[self.heavy_index] = heavy
        if np.isfinite(heavy).all():
            full = self.placer.place(full)
        report.n_atoms = len(full)
        return out, full, report

    def relax_frame(self, xyz: np.ndarray, frame: int = 0, time_ps: float = math.nan):
        """Relax one frame: input positions [A, 3] Å -> (relaxed [A, 3] Å, with hydrogens [T, 3] Å, FrameReport).

        A frame with non-finite input, geometry no hydrogens can be placed on, a minimiser exception or a
        non-finite result is returned unrelaxed with ``status == "failed"``; a relaxed frame with a D residue or a
        broken bond has ``status == "damaged"`` (the reason names the residues).
        """
        t0 = time.perf_counter()
        xyz = np.asarray(xyz, dtype=np.float64)
        report = FrameReport(frame=int(frame), time=float(time_ps))
        out = xyz.copy()
        heavy = self.hs.positions(xyz)
        if not np.isfinite(heavy).all():
            return self._unrelaxed(out, heavy, report, "non-finite (NaN or inf) input coordinates", t0)
        if self.context is None:
            try:
                self._setup(heavy)
            except DegenerateGeometryError as err:
                return self._unrelaxed(out, heavy, report, f"frame {frame}: {err}", t0)
        full = np.zeros((self.topology.getNumAtoms(), 3))
        full[self.heavy_index] = heavy
        full = self.placer.place(full)
        report.n_atoms = len(full)
        report.clash_residues_before, report.clash_score_before = self._clashes(full)
        self.checks.fill(report, full)
        try:
            for k, i in enumerate(self.ca_index):
                self.restraint.setParticleParameters(k, int(i), (full[i] * 0.1).tolist())
            self.restraint.updateParametersInContext(self.context)
            if self.platform_name in ("CPU", "Reference"):
                # a fresh neighbour list (~15 ms at 200 residues): a frame's result does not depend on the frames
                # relaxed before it, so any split of a trajectory into blocks gives the same frames
                self.context.reinitialize()
            self.context.setPositions(unit.Quantity(full * 0.1, unit.nanometer))
            report.energy_before = self._energy()
            mm.LocalEnergyMinimizer.minimize(self.context, self.tolerance, self.max_iterations)
            state = self.context.getState(getPositions=True, getEnergy=True, groups=self._groups)
            relaxed = np.asarray(state.getPositions(asNumpy=True).value_in_unit(unit.nanometer)) * 10.0
            energy = state.getPotentialEnergy().value_in_unit(unit.kilojoule_per_mole)
        except Exception as err:  # OpenMMException (NaN coordinates, ...) must not end a trajectory
            return self._unrelaxed(out, heavy, report, f"minimisation raised: {err}".strip(), t0)
        if not (math.isfinite(energy) and np.isfinite(relaxed).all()):
            report.status, report.reason = "failed", "minimisation gave non-finite energy or coordinates"
            report.seconds = time.perf_counter() - t0
            return out, full, report
        report.energy_after = energy
        report.clash_residues_after, report.clash_score_after = self._clashes(relaxed)
        self.checks.fill(report, full, relaxed)
        drift = np.linalg.norm(relaxed[self.ca_index] - full[self.ca_index], axis=-1)
        report.ca_drift_rms = float(np.sqrt(np.mean(drift ** 2))) if len(drift) else 0.0
        report.ca_drift_max = float(drift.max()) if len(drift) else 0.0
        have = self.hs.source_index >= 0
        out[self.hs.source_index[have]] = relaxed[self.heavy_index[have]]
        report.seconds = time.perf_counter() - t0
        return out, relaxed, report

    # -- many frames ----------------------------------------------------------------------------------------
    def relax_positions(self, positions, frames=None, times=None, progress=False):
        """Relax frames ``positions`` [F, A, 3] Å; ``frames`` [F] numbers and ``times`` [F] ps for the reports.

        Returns (relaxed [F, A, 3] float32 Å, with hydrogens [F, T, 3] float32 Å or None before any set-up,
        list[FrameReport])."""
        from tqdm.auto import tqdm

        positions = np.asarray(positions, dtype=np.float64).reshape(-1, len(self.atoms), 3)
        n = len(positions)
        frames = np.arange(n) if frames is None else np.asarray(frames).reshape(-1)
        times = np.full(n, np.nan) if times is None else np.asarray(times, dtype=np.float64).reshape(-1)
        heavy_out, full_out, reports = [], [], []
        for k in tqdm(range(n), desc="relax", unit="frame", disable=not progress):
            out, full, report = self.relax_frame(positions[k], frame=int(frames[k]), time_ps=float(times[k]))
            heavy_out.append(out)
            full_out.append(full)
            reports.append(report)
        full = None
        if self.topology is not None:
            n_total = self.topology.getNumAtoms()
            full = np.stack([f if f is not None else np.full((n_total, 3), np.nan) for f in full_out])
            full = full.astype(np.float32)
        return np.stack(heavy_out).astype(np.float32), full, reports

    def output_universe(self, heavy, full, times=None, dimensions=None, hydrogens=False, dt=None, steps=None):
        """In-memory Universe of relaxed frames: the input topology (``heavy`` [F, A, 3] Å), or with
        ``hydrogens`` the hydrogenated one (``full`` [F, T, 3] Å) with the input's residue names (HSD, CYX, ...);
        every frame with its ``times`` [F] ps, ``dimensions`` [F, 6] and ``steps`` [F]; ``dt`` ps."""
        if not hydrogens:
            import MDAnalysis as mda
            return load_frames(mda.Merge(self.atoms), heavy, times, dimensions, dt=dt, steps=steps)
        if self.topology is None or full is None:
            raise LatcpbInputError(f"{self.source}: no frame could be set up for OpenMM; nothing to hydrogenate")
        return topology_to_universe(self.topology, full, times, dimensions, resnames=self.hs.input_resnames,
                                    dt=dt, steps=steps)

    def relax_universe(self, universe, hydrogens=False, progress=True, start=None, stop=None, step=None,
                       frame_offset=0):
        """Relax the frames of ``universe`` (same atoms as this Relaxer's; set-up reused across calls, e.g. for
        batches of one trajectory). Returns (in-memory Universe, list[FrameReport]) as ``relax_universe``; each
        output frame keeps the time and box of its input frame; report frame numbers are the frame indices plus
        ``frame_offset``."""
        atoms = universe.atoms
        if len(atoms) != len(self.atoms):
            raise LatcpbInputError(f"{self.source}: this Relaxer was built for {len(self.atoms)} atoms, "
                                   f"got {len(atoms)}")
        trajectory = atoms.universe.trajectory
        indices = list(range(len(trajectory)))[slice(start, stop, step)]
        xyz, times, dims, steps = [], [], [], []
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")  # "Reader has no dt information": its frame * 1 ps is kept as it is
            dt = float(trajectory.dt) * (step or 1)
            for index in indices:
                ts = trajectory[index]
                xyz.append(atoms.positions.copy())
                times.append(ts.time)
                dims.append(None if ts.dimensions is None else np.asarray(ts.dimensions, dtype=np.float64))
                steps.append(ts.data.get("step"))
        heavy, full, reports = self.relax_positions(np.stack(xyz), np.asarray(indices) + frame_offset, times,
                                                    progress=progress)
        return self.output_universe(heavy, full, times, dims, hydrogens=hydrogens, dt=dt, steps=steps), reports


def relax_universe(universe, forcefield=DEFAULT_FORCEFIELD, solvent=DEFAULT_SOLVENT, hydrogens=False,
                   restraint_k=DEFAULT_RESTRAINT_K, max_iterations=DEFAULT_MAX_ITERATIONS,
                   tolerance=DEFAULT_TOLERANCE, platform=None, ph=7.0, progress=True, histidine="auto",
                   cutoff=DEFAULT_CUTOFF, start=None, stop=None, step=None, threads=None,
                   chirality_k=DEFAULT_CHIRALITY_K):
    """Relax every frame of an all-atom Universe (or AtomGroup) with CA-restrained minimisation.

    forcefield: "amber14" | "amber99sbildn" | "amber19" | "charmm36" (or a list of OpenMM XML files);
    solvent: "vacuum" | "obc" | "gbn2"; hydrogens: keep the added hydrogens in the output; restraint_k kJ/mol/Å^2
    per CA; max_iterations (0: no cap); tolerance kJ/mol/nm; platform: "CUDA"/"OpenCL"/"CPU"/"Reference"/None
    (fastest that works); threads: CPU platform threads; chirality_k kJ/mol/rad^2: flat-bottom guard on each N-CA-C-CB
    torsion, k (|theta - theta_L| - 30°)^2 beyond 30° of the L value, that keeps L residues L (0: off; restraint
    energies are not reported); ph, histidine ("auto"/"HID"/"HIE"/"HIP"); cutoff Å
    (None: no cutoff).
    Returns (in-memory Universe, list[FrameReport]): the input topology with relaxed positions, or with
    ``hydrogens=True`` the hydrogenated topology (input residue names kept); every frame keeps its time and box.
    Failed frames are kept unrelaxed and flagged in their report; damaged ones (D residue, broken bond) flagged.
    """
    atoms = universe.atoms
    relaxer = Relaxer(atoms, forcefield=forcefield, solvent=solvent, restraint_k=restraint_k,
                      max_iterations=max_iterations, tolerance=tolerance, platform=platform, ph=ph,
                      histidine=histidine, cutoff=cutoff, source=_source_name(atoms), threads=threads,
                      chirality_k=chirality_k)
    return relaxer.relax_universe(atoms, hydrogens=hydrogens, progress=progress, start=start, stop=stop, step=step)


def relax(structure, **kwargs):
    """``relax_universe`` for a Universe, an AtomGroup or a structure file path (read with MDAnalysis)."""
    if isinstance(structure, (str, os.PathLike)):
        structure = _read_structure(structure)
    return relax_universe(structure, **kwargs)


def _read_structure(path_or_text):
    """MDAnalysis Universe of a structure file path, or of PDB text (a string with newlines)."""
    import MDAnalysis as mda
    from MDAnalysis.lib.util import NamedStream

    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # MDAnalysis warns about absent optional PDB fields
        try:
            if isinstance(path_or_text, str) and "\n" in path_or_text:
                return mda.Universe(NamedStream(io.StringIO(path_or_text), "topology.pdb"), format="PDB")
            return mda.Universe(os.fspath(path_or_text))
        except (OSError, ValueError) as err:
            raise LatcpbInputError(f"cannot read {str(path_or_text)[:80]!r}: {err}") from err


def _source_name(atoms) -> str:
    try:
        return os.path.basename(atoms.universe.filename or "input")
    except (AttributeError, TypeError):
        return "input"


# -- worker entry point ---------------------------------------------------------------------------------------------
class RelaxedBlock:
    """Result of ``relax_block``: ``positions_out, reports = block`` unpacks; ``topology_pdb`` (PDB text of the
    hydrogenated topology, input residue names, first frame) is set with ``hydrogens=True``, else None."""

    def __init__(self, positions, reports, topology_pdb=None):
        self.positions, self.reports, self.topology_pdb = positions, reports, topology_pdb

    def __iter__(self):
        return iter((self.positions, self.reports))


_WORKER_RELAXERS = {}   # (topology digest, options) -> Relaxer: one OpenMM Context per worker process


def relax_block(topology, positions, times=None, dimensions=None, frames=None, hydrogens=False, **relax_options):
    """Relax a block of frames in this (worker) process; inputs and outputs are picklable.

    topology: PDB text or a path of the all-atom heavy-atom topology (e.g. the backmapped topology PDB; its own
    coordinates are the reference for the hydrogen set-up, so every block of a trajectory relaxes its frames the
    same way whichever frames it holds); positions [F, A, 3] Å; times [F] ps; dimensions [F, 6] or None;
    frames [F] frame numbers for the reports (default 0..F-1); relax_options: as ``relax_universe``
    (forcefield, solvent, restraint_k, max_iterations, tolerance, platform, threads, ph, histidine, cutoff).
    The Relaxer (System + Context) is built once per process and topology and reused by later blocks.
    Returns ``RelaxedBlock``: ``positions_out, reports = relax_block(...)`` with positions_out [F, A, 3] float32
    Å (or [F, T, 3] with ``hydrogens=True``, T atoms of ``.topology_pdb``) and one FrameReport per frame.
    """
    text = topology if isinstance(topology, str) and "\n" in topology else None
    if text is None:
        with open(os.fspath(topology), "rb") as fh:
            digest = hashlib.sha1(fh.read()).hexdigest()
    else:
        digest = hashlib.sha1(text.encode()).hexdigest()
    key = (digest, tuple(sorted((k, repr(v)) for k, v in relax_options.items())))
    relaxer = _WORKER_RELAXERS.get(key)
    if relaxer is None:
        u = _read_structure(topology)
        relaxer = Relaxer(u.atoms, source=_source_name(u.atoms) if text is None else "topology", **relax_options)
        relaxer.prepare(defer_degenerate=True)
        _WORKER_RELAXERS.clear()  # one system per worker at a time
        _WORKER_RELAXERS[key] = relaxer
    heavy, full, reports = relaxer.relax_positions(positions, frames, times)
    if not hydrogens:
        return RelaxedBlock(heavy, reports)
    out = relaxer.output_universe(heavy, full, times, dimensions, hydrogens=True)
    pdb = io.StringIO()
    from MDAnalysis.lib.util import NamedStream

    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        out.trajectory[0]
        out.atoms.write(NamedStream(pdb, "topology.pdb"))
    return RelaxedBlock(full, reports, pdb.getvalue())
