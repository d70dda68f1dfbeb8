"""``Backmapper``: the one object that the CLI, ``backmap_universe`` and the OpenMM reporter call."""
from __future__ import annotations

import warnings
from dataclasses import dataclass
from typing import Iterator

import numpy as np
import torch

from latcpb.data.cg_topology import ResidueTopology, residue_topology
from latcpb.errors import LatcpbInputError
from latcpb.geometry.internal_coords import LayoutTensors
from latcpb.io.universe_builder import allatom_universe, slot_atom_index
from latcpb.model.generator import load_generator
from latcpb.model.geometric import GeometryIdealizer

IDEALIZE_MODES = ("standard", "full", "none", None)
MAX_ABS_COORDINATE = 1.0e5  # Å; larger input coordinates are treated as corrupt


def resolve_device(device=None) -> torch.device:
    """'auto' or None -> CUDA when available, else CPU; otherwise ``torch.device(device)``."""
    if device in (None, "auto"):
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    if str(device).startswith("cuda") and not torch.cuda.is_available():
        raise LatcpbInputError(f"--device {device}: CUDA is not available on this machine")
    return torch.device(device)


@dataclass
class BackmapPlan:
    """What is fixed for one CG system: its residues, chains, geometry layout and all-atom atom order."""

    topology: ResidueTopology
    beads: object            # MDAnalysis AtomGroup of the CG beads, one per residue
    layout_tensors: LayoutTensors
    atom_index: np.ndarray   # [A] flat indices into [N * 15]
    source: str

    @property
    def n_atoms(self) -> int:
        return len(self.atom_index)

    @property
    def n_residues(self) -> int:
        return self.topology.n_residues

    def empty_universe(self, n_frames: int = 1):
        """All-atom Universe of this system with ``n_frames`` frames of zeros."""
        return allatom_universe(self.topology, np.zeros((n_frames, self.n_atoms, 3), dtype=np.float32))

    def universe(self, positions: np.ndarray):
        """All-atom Universe holding ``positions`` [F, A, 3] Å as an in-memory trajectory."""
        return allatom_universe(self.topology, positions)


class Backmapper:
    """Backmaps CA traces to heavy atoms with a generator (the shipped model by default).

    model: None (shipped model), "latcpb", "geometric" or a checkpoint path; samples: all-atom samples per CG
    frame; seed: makes sampling reproducible (the same seed and batch size give bit-identical output on the CPU);
    batch_size: frames per generator call; idealize: "standard" (default) imposes Engh & Huber bond lengths, ideal
    planar peptide units (cis where the CA trace is cis), planar aromatic rings, closed proline rings and L chirality
    on the generator's output, "full" also the other rigid groups (planar groups, branch points), "none" keeps the
    output as generated (``GeometryIdealizer``); options (e.g. steps, temperature) go to the generator.
    """

    def __init__(self, model=None, samples=1, seed=None, device=None, batch_size=32, idealize="standard",
                 **options):
        if samples < 1:
            raise LatcpbInputError(f"--samples {samples}: must be at least 1")
        if batch_size < 1:
            raise LatcpbInputError(f"--batch-size {batch_size}: must be at least 1")
        self.device = resolve_device(device)
        self.generator = load_generator(model, self.device)
        if idealize not in IDEALIZE_MODES:
            raise LatcpbInputError(f"--idealize {idealize}: choose one of {', '.join(map(str, IDEALIZE_MODES))}")
        self.idealizer = (None if idealize in (None, "none") else
                          GeometryIdealizer(self.device, level=idealize))
        self.samples = samples
        self.seed = seed
        self.batch_size = batch_size
        self.options = {k: v for k, v in options.items() if v is not None}
        self._rng = None
        self.reset_seed()

    @property
    def model_name(self) -> str:
        return self.generator.name

    def reset_seed(self) -> None:
        """Restart the random stream from ``seed`` (done at the start of every ``iter_backmap``)."""
        if self.seed is None:
            self._rng = None
        else:
            self._rng = torch.Generator(device=self.device)
            self._rng.manual_seed(int(self.seed))

    def plan(self, beads, source="input") -> BackmapPlan:
        """Check and describe a CG AtomGroup (one bead per residue) at its current frame."""
        positions = beads.positions
        _check_coordinates(positions[None], source, first_frame=0)
        topology = residue_topology(beads, positions, source=source)
        lt = LayoutTensors(topology.layout, device=self.device)
        return BackmapPlan(topology, beads, lt, slot_atom_index(topology.layout.atom_mask), source)

    def backmap_coordinates(self, plan: BackmapPlan, ca: np.ndarray, first_frame: int = 0) -> np.ndarray:
        """CA [F, N, 3] Å -> heavy atoms [F * samples, A, 3] float32 Å (frame-major)."""
        ca = np.asarray(ca, dtype=np.float32)
        if ca.ndim != 3 or ca.shape[1:] != (plan.n_residues, 3):
            raise LatcpbInputError(f"{plan.source}: expected CA coordinates of shape [frames, {plan.n_residues}, 3],"
                                   f" got {list(ca.shape)}")
        _check_coordinates(ca, plan.source, first_frame)
        out = []
        index = torch.as_tensor(plan.atom_index, device=self.device)
        with torch.inference_mode():
            for start in range(0, len(ca), self.batch_size):
                batch = torch.as_tensor(ca[start:start + self.batch_size], device=self.device)
                xyz = self.generator.generate(batch, plan.layout_tensors, samples=self.samples, rng=self._rng,
                                              **self.options)
                if self.idealizer is not None:
                    xyz = self.idealizer(xyz, plan.layout_tensors)
                flat = xyz.reshape(xyz.shape[0], -1, 3)[:, index]
                out.append(flat.float().cpu().numpy())
        result = np.concatenate(out) if out else np.zeros((0, plan.n_atoms, 3), dtype=np.float32)
        if not np.isfinite(result).all():
            bad = int(np.nonzero(~np.isfinite(result).all(axis=(1, 2)))[0][0]) // self.samples + first_frame
            raise LatcpbInputError(f"{plan.source}: frame {bad}: the generator produced non-finite coordinates"
                                   " (degenerate CA trace?)")
        return result

    def iter_backmap(self, universe, select="name CA", start=None, stop=None, step=None, source=None,
                     progress=False) -> Iterator[tuple[BackmapPlan, np.ndarray, np.ndarray]]:
        """Stream a CG trajectory in batches: yields (plan, frame indices [b], positions [b * samples, A, 3] Å).

        Only one batch of frames is in memory at a time.
        """
        source = source or _describe(universe)
        beads = _select(universe, select, source)
        frames = universe.universe.trajectory[start:stop:step]  # a Universe, or an AtomGroup of one
        n_frames = len(frames)
        if n_frames == 0:
            raise LatcpbInputError(f"{source}: no frames selected (start={start}, stop={stop}, step={step})")
        self.reset_seed()
        plan = None
        bar = _progress(n_frames, progress)
        try:
            batch, indices = [], []
            iterator = iter(frames)
            for k in range(n_frames):
                try:
                    with warnings.catch_warnings():
                        warnings.simplefilter("ignore")
                        ts = next(iterator)
                except StopIteration:
                    raise LatcpbInputError(f"{source}: trajectory ended after {k} of {n_frames} frames") from None
                except (OSError, EOFError, ValueError, RuntimeError) as err:
                    raise LatcpbInputError(f"{source}: cannot read frame {k} ({str(err).strip()})") from err
                if plan is None:
                    plan = self.plan(beads, source)
                batch.append(beads.positions.copy())
                indices.append(ts.frame)
                if len(batch) == self.batch_size or k == n_frames - 1:
                    positions = self.backmap_coordinates(plan, np.stack(batch), first_frame=indices[0])
                    yield plan, np.asarray(indices), positions
                    bar.update(len(batch))
                    batch, indices = [], []
        except BaseException:
            bar.leave = False  # an error message follows: do not leave a half-filled bar above it
            raise
        finally:
            bar.close()

    def backmap_universe(self, universe, select="name CA", start=None, stop=None, step=None, progress=False):
        """All-atom Universe (in-memory trajectory, ``samples`` frames per CG frame) of a CG Universe (or of the
        ``select`` atoms of an AtomGroup)."""
        plan, chunks = None, []
        for plan, _, positions in self.iter_backmap(universe, select, start, stop, step, progress=progress):
            chunks.append(positions)
        return plan.universe(np.concatenate(chunks))


def _describe(universe) -> str:
    try:
        return universe.universe.filename or "universe"
    except AttributeError:
        return "universe"


def _select(universe, select, source):
    try:
        beads = universe.select_atoms(select)
    except Exception as err:  # MDAnalysis raises SelectionError / ValueError for bad strings
        raise LatcpbInputError(f"--select '{select}': invalid selection ({str(err).strip()})") from err
    if len(beads) == 0:
        raise LatcpbInputError(f"{source}: --select '{select}' matched no atoms")
    if len(np.unique(beads.ix)) != len(beads):
        raise LatcpbInputError(f"{source}: --select '{select}' matched duplicated atoms")
    return beads


def _check_coordinates(ca, source, first_frame):
    """Raise for NaN/inf or absurd (> 1e5 Å) coordinates, naming the frame."""
    bad = ~np.isfinite(ca).all(axis=(1, 2)) | (np.abs(np.nan_to_num(ca, nan=0.0, posinf=0, neginf=0))
                                               > MAX_ABS_COORDINATE).any(axis=(1, 2))
    if bad.any():
        frame = int(np.nonzero(bad)[0][0]) + first_frame
        what = "non-finite (NaN or inf)" if not np.isfinite(ca[np.nonzero(bad)[0][0]]).all() else "absurd (> 1e5 Å)"
        raise LatcpbInputError(f"{source}: frame {frame}: {what} CA coordinates")


def _progress(total, enabled):
    from tqdm.auto import tqdm
    return tqdm(total=total, unit="frame", disable=not enabled, desc="backmapping")


def backmap_universe(universe, select="name CA", model=None, samples=1, seed=None, batch_size=32, device=None,
                     start=None, stop=None, step=None, idealize="standard", **options):
    """Backmap a CG MDAnalysis Universe (or AtomGroup, e.g. ``u.select_atoms("protein")``); returns an all-atom
    Universe with an in-memory trajectory.

    ``samples`` all-atom frames are produced per CG frame (frame-major). See ``Backmapper`` for the options.
    """
    backmapper = Backmapper(model=model, samples=samples, seed=seed, device=device, batch_size=batch_size,
                            idealize=idealize, **options)
    return backmapper.backmap_universe(universe, select=select, start=start, stop=stop, step=step)
