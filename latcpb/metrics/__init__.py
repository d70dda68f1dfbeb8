"""Backmapping quality metrics (DESIGN.md "Metrics"): RMSD, GED, clashes, bond score, chirality, cis peptides,
torsion KL, CA preservation, sample diversity and chemical validity (``latcpb.metrics.validity``: bond-angle
outliers, severe overlaps, C-beta deviation, planarity; ``latcpb.metrics.wells``: rotamer and Ramachandran
outliers). ``evaluate`` computes all of them; plots live in ``latcpb.metrics.report`` (needs matplotlib, imported only there)."""
from latcpb.metrics.evaluate import evaluate
from latcpb.metrics.matching import MatchedSystem, match_systems
from latcpb.metrics.structure import (atom_sets, bond_length_scores, ca_rmsd, clash_scores, d_residues,
                                      graph_edit_distance, perceive_bonds, rmsd, superposed_rmsd)
from latcpb.metrics.validity import (VALIDITY_DETAIL_KEYS, VALIDITY_KEYS, score_validity, structure_validity,
                                     validity_topology)
from latcpb.metrics.torsions import (backbone_torsions, chi_angles, cis_peptides, dihedral, histogram,
                                     kl_divergence, torsion_set)

__all__ = [
    "evaluate", "MatchedSystem", "match_systems", "atom_sets", "bond_length_scores", "ca_rmsd", "clash_scores",
    "d_residues", "graph_edit_distance", "perceive_bonds", "rmsd", "superposed_rmsd", "backbone_torsions",
    "chi_angles", "cis_peptides", "dihedral", "histogram", "kl_divergence", "torsion_set",
    "VALIDITY_KEYS", "VALIDITY_DETAIL_KEYS", "score_validity", "structure_validity", "validity_topology",
]
