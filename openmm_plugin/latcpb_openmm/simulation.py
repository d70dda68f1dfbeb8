"""``make_simulation``: an OpenMM Simulation of a (backmapped, relaxed) structure, ready to run."""
from __future__ import annotations

import os
import tempfile
import warnings

import numpy as np
import openmm as mm
import openmm.app as app
import openmm.unit as unit

from latcpb.data.names import is_hydrogen
from latcpb.errors import LatcpbInputError
from latcpb_openmm.convert import box_vectors, heavy_structure
from latcpb_openmm.forcefields import load_forcefield
from latcpb_openmm.hydrogens import add_hydrogens
from latcpb_openmm.relaxation import (DEFAULT_CUTOFF, DEFAULT_FORCEFIELD, DEFAULT_SOLVENT, available_platforms,
                                      choose_platform, create_system)


def _atoms_of(universe_or_pdb):
    if isinstance(universe_or_pdb, (str, os.PathLike)):
        import MDAnalysis as mda
        try:
            return mda.Universe(os.fspath(universe_or_pdb)).atoms
        except (OSError, ValueError) as err:
            raise LatcpbInputError(f"cannot read {universe_or_pdb}: {err}") from err
    return universe_or_pdb.atoms


def _has_hydrogens(atoms) -> bool:
    try:
        elements = list(atoms.elements)
    except Exception:  # NoDataError: decide by name
        elements = [None] * len(atoms)
    return any(is_hydrogen(a.name, e) for a, e in zip(atoms, elements))


def _complete_topology(atoms, forcefield, ph, histidine):
    """(Topology, positions Å [T, 3]) with every hydrogen of ``forcefield``'s templates.

    Input that already carries a complete set of hydrogens (e.g. ``relax_universe(..., hydrogens=True)``) is taken as
    it is (read through openmm.app.PDBFile for standard bonds); otherwise hydrogens are stripped and added again.
    """
    xyz = np.asarray(atoms.positions, dtype=np.float64)
    if not np.isfinite(xyz).all():
        raise LatcpbInputError("non-finite (NaN or inf) coordinates: cannot start a simulation")
    if _has_hydrogens(atoms):
        with tempfile.TemporaryDirectory() as tmp:
            path = os.path.join(tmp, "input.pdb")
            with warnings.catch_warnings():
                warnings.simplefilter("ignore")  # MDAnalysis warns about absent optional PDB fields
                atoms.write(path)
            pdb = app.PDBFile(path)
        if not forcefield.getUnmatchedResidues(pdb.topology):
            vectors = box_vectors(getattr(atoms, "dimensions", None))
            pdb.topology.setPeriodicBoxVectors(vectors)  # None (no box) clears the PDB placeholder CRYST1
            return pdb.topology, np.asarray(pdb.positions.value_in_unit(unit.nanometer)) * 10.0
    hs = heavy_structure(atoms, histidine=histidine)
    top, pos, _, _ = add_hydrogens(hs, hs.positions(xyz), forcefield, ph=ph)
    return top, pos


def make_simulation(universe_or_pdb, forcefield=DEFAULT_FORCEFIELD, solvent=DEFAULT_SOLVENT, integrator=None,
                    platform=None, temperature=300.0, ph=7.0, histidine="auto", cutoff=DEFAULT_CUTOFF,
                    timestep=2.0, friction=1.0, constraints=app.HBonds, seed=None) -> app.Simulation:
    """OpenMM Simulation of a protein structure (Universe, AtomGroup or file path; current frame), ready to run.

    Hydrogens are added (pH ``ph``) unless the input has them all; positions are set and velocities drawn at
    ``temperature`` K. Default integrator: LangevinMiddleIntegrator(``temperature`` K, ``friction`` 1/ps,
    ``timestep`` fs) with H-bond constraints; ``cutoff`` Å (None: no cutoff); ``seed`` (non-zero) fixes the
    velocities and the Langevin noise, None draws them (OpenMM reads 0 as "draw", so 0 is refused); ``platform``
    None takes the fastest that works (CUDA, OpenCL, CPU). The Topology carries the input's box, chains and
    disulfides (CYX or SG-SG bonds). Relax the structure first (``relax_universe``) if it
    may contain clashes.
    """
    if seed is not None and int(seed) == 0:
        raise LatcpbInputError("make_simulation: seed 0 would draw a random seed in OpenMM; pass a non-zero seed to "
                               "fix the velocities and the noise, or None to draw them")
    atoms = _atoms_of(universe_or_pdb)
    ff = load_forcefield(forcefield, solvent)
    top, pos = _complete_topology(atoms, ff, ph, histidine)
    system = create_system(ff, top, solvent, cutoff, constraints=constraints)
    if integrator is None:
        integrator = mm.LangevinMiddleIntegrator(temperature * unit.kelvin, friction / unit.picosecond,
                                                 timestep * unit.femtosecond)
        if seed is not None:
            integrator.setRandomNumberSeed(int(seed))
    simulation = None
    names = [platform] if platform is not None else available_platforms()
    for k, name in enumerate(names):  # fastest first; a GPU platform without a usable device falls through
        try:
            simulation = app.Simulation(top, system, integrator, choose_platform(name))
            break
        except LatcpbInputError:
            raise
        except Exception as err:  # OpenMMException: no device, ...
            if platform is not None or k == len(names) - 1:
                raise LatcpbInputError(f"OpenMM platform {name} cannot run this simulation: {err}") from err
            integrator = mm.XmlSerializer.clone(integrator)  # an integrator is bound by a failed attempt

    simulation.context.setPositions(unit.Quantity(pos * 0.1, unit.nanometer))
    if constraints is not None:
        simulation.context.applyConstraints(1e-6)
    if seed is None:
        simulation.context.setVelocitiesToTemperature(temperature * unit.kelvin)
    else:
        simulation.context.setVelocitiesToTemperature(temperature * unit.kelvin, int(seed))
    return simulation
