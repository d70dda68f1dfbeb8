"""LatCPB's OpenMM stage: hydrogens, CA-restrained relaxation with reports, simulations and a backmapping reporter.

The only package of the project that imports OpenMM; ``latcpb`` itself never does. Modules: ``forcefields``
(force fields, protonation names), ``convert`` (AtomGroup <-> Topology: chains, disulfides, box), ``hydrogens``,
``relaxation`` (``Relaxer``, ``relax_universe``, ``relax_block`` for worker processes), ``report`` (per-frame
checks), ``simulation`` and ``reporter`` (``BackmapReporter``).
"""
from latcpb_openmm.convert import heavy_structure, topology_to_universe
from latcpb_openmm.forcefields import load_forcefield
from latcpb_openmm.hydrogens import to_openmm
from latcpb_openmm.relaxation import Relaxer, choose_platform, relax, relax_block, relax_universe
from latcpb_openmm.report import FrameReport, summarize, write_report
from latcpb_openmm.reporter import BackmapReporter
from latcpb_openmm.simulation import make_simulation

__all__ = ["BackmapReporter", "FrameReport", "Relaxer", "choose_platform", "heavy_structure", "load_forcefield",
           "make_simulation", "relax", "relax_block", "relax_universe", "summarize", "to_openmm",
           "topology_to_universe", "write_report"]
