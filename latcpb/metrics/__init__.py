"""Backmapping quality metrics (DESIGN.md "Metrics"): RMSD, GED, clashes, bond score, chirality, cis peptides,
torsion KL, CA preservation and sample diversity. ``evaluate`` computes all of them; plots live in
``latcpb.metrics.report`` (needs matplotlib, imported only there)."""
from latcpb.metrics.evaluate import evaluate
from latcpb.metrics.matching import MatchedSystem, match_systems
from latcpb.metrics.structure import (atom_sets, bond_length_scores, ca_rmsd, clash_scores, d_residues,
                                      graph_edit_distance, perceive_bonds, rmsd, superposed_rmsd)
from latcpb.metrics.torsions import (backbone_torsions, chi_angles, cis_peptides, dihedral, histogram,
                                     kl_divergence, torsion_set)

__all__ = [
    "evaluate", "MatchedSystem", "match_systems", "atom_sets", "bond_length_scores", "ca_rmsd", "clash_scores",
    "d_residues", "graph_edit_distance", "perceive_bonds", "rmsd", "superposed_rmsd", "backbone_torsions",
    "chi_angles", "cis_peptides", "dihedral", "histogram", "kl_divergence", "torsion_set",
]
