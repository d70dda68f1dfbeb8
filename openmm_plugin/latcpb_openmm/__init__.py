"""LatCPB's OpenMM stage: hydrogens, CA-restrained relaxation with reports, simulations and a backmapping reporter.

The only package of the project that imports OpenMM; ``latcpb`` itself never does.
"""
from latcpb_openmm.relaxation import FrameReport, Relaxer, relax, relax_universe, summarize, write_report
from latcpb_openmm.reporter import BackmapReporter
from latcpb_openmm.simulation import make_simulation
from latcpb_openmm.topology import heavy_structure, load_forcefield, to_openmm, topology_to_universe

__all__ = ["BackmapReporter", "FrameReport", "Relaxer", "heavy_structure", "load_forcefield", "make_simulation",
           "relax", "relax_universe", "summarize", "to_openmm", "topology_to_universe", "write_report"]
