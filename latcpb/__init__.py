"""LatCPB: backmapping of coarse-grained (C-alpha) proteins to all-atom structures with latent diffusion.

    import MDAnalysis as mda, latcpb
    u_aa = latcpb.backmap_universe(mda.Universe("cg.pdb", "cg.xtc"))   # same frame times, dt and boxes as the input
"""
from latcpb.backmapper import Backmapper, BackmapPlan, FrameBatch, backmap_universe
from latcpb.errors import LatcpbInputError

__version__ = "0.1.0"
__all__ = ["Backmapper", "BackmapPlan", "FrameBatch", "backmap_universe", "LatcpbInputError", "__version__"]
