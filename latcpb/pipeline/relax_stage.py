"""Relaxation on the workers: a ``RunSpec.postprocess`` that minimises a block's frames with OpenMM where the
block was backmapped (``latcpb_openmm.relax_block``: one OpenMM Context per worker process, reused by its blocks).

``latcpb`` itself never imports OpenMM: the plugin is imported on the worker, when the first block is relaxed.
Every block is relaxed against the same reference structure (the run's first backmapped frame, as PDB text),
so the hydrogen set-up does not depend on which worker relaxes which block.
"""
from __future__ import annotations

import importlib
import io
import pickle
import warnings

import numpy as np

from latcpb.errors import LatcpbInputError
from latcpb.pipeline.blocks import BlockResult


def openmm_plugin():
    """``latcpb_openmm``, or a clear error where OpenMM is not installed."""
    try:
        return importlib.import_module("latcpb_openmm")
    except ImportError as err:
        raise LatcpbInputError(f"--relax needs OpenMM: pip install 'latcpb[openmm]' ({err})") from err


def reference_pdb(result: BlockResult) -> str:
    """PDB text of the first frame of ``result`` (all-atom topology of its plan, the frame's box)."""
    from MDAnalysis.lib.util import NamedStream

    from latcpb.io.universe_builder import allatom_universe

    boxes = result.output_dimensions()
    u = allatom_universe(result.topology, result.positions[:1],
                         dimensions=None if boxes is None else boxes[:1])
    text = io.StringIO()
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        u.atoms.write(NamedStream(text, "reference.pdb"))
    return text.getvalue()


class RelaxStage:
    """postprocess(plan, result) -> the result with relaxed positions, ``reports`` (one FrameReport per output
    frame) and, with hydrogens, ``topology_pdb`` (the hydrogenated topology).

    reference: PDB text of the reference structure; first_output_frame(index) gives the output frame number of
    a block's first frame (for the reports); options: ``relax_block``'s (forcefield, solvent, platform ...).
    """

    def __init__(self, reference: str, frames_per_block: int, hydrogens=False, **options):
        self.reference = reference
        self.frames_per_block = frames_per_block  # output frames of every block but the last
        self.hydrogens = hydrogens
        self.options = {k: v for k, v in options.items() if v is not None}

    def __call__(self, plan, result: BlockResult) -> BlockResult:
        first = result.index * self.frames_per_block
        relaxed = openmm_plugin().relax_block(self.reference, result.positions, times=result.output_times(),
                                              dimensions=result.output_dimensions(),
                                              frames=first + np.arange(result.n_output_frames),
                                              hydrogens=self.hydrogens, **self.options)
        result.positions = np.asarray(relaxed.positions, dtype=np.float32)
        result.reports = list(relaxed.reports)
        result.topology_pdb = relaxed.topology_pdb
        return result

    def __repr__(self):  # recorded in the work folder's manifest: what decides the output
        return f"RelaxStage(hydrogens={self.hydrogens}, {sorted(self.options.items())})"


def dump_reports(reports) -> np.ndarray:
    """FrameReports as a uint8 array for a block's .npz (read back by ``load_reports``)."""
    return np.frombuffer(pickle.dumps(list(reports)), dtype=np.uint8)


def load_reports(array: np.ndarray) -> list:
    return pickle.loads(array.tobytes())


def relax_note(reports, report_path: str) -> str | None:
    """One line on the relaxation reports (objects with ``frame``, ``status``, ``reason``), or None when every frame
    relaxed "ok": how many frames were damaged (relaxed with a D residue or a broken bond) or failed (left
    unrelaxed), the first of each with its reason, and where the report is."""
    parts = []
    for status, what in (("damaged", "damaged by relaxation"), ("failed", "not relaxed")):
        bad = [r for r in reports if r.status == status]
        if bad:
            parts.append(f"{len(bad)} of {len(reports)} frames {what} (first: output frame {bad[0].frame}:"
                         f" {bad[0].reason or status})")
    return None if not parts else "relaxation: " + "; ".join(parts) + f"; see {report_path}"
