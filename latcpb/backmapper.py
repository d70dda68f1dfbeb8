"""``Backmapper``: the one object that the CLI, ``backmap_universe`` and the OpenMM reporter call."""
from __future__ import annotations

import sys
import warnings
from dataclasses import dataclass
from typing import Iterator

import numpy as np
import torch

from latcpb.data.cg_topology import MAX_BEAD_SPACING, ResidueTopology, describe_residue, residue_topology
from latcpb.errors import LatcpbInputError
from latcpb.geometry import residue_constants as rc
from latcpb.geometry.backbone import n_ca_c_excess
from latcpb.geometry.ca_trace import ADMIT_TOLERANCE_DEG, admit_backbone, refine_ca_trace
from latcpb.geometry.internal_coords import LayoutTensors
from latcpb.io.periodic import ChainUnwrapper, has_box
from latcpb.io.selection import DEFAULT_SELECT, select_beads
from latcpb.io.universe_builder import allatom_universe, slot_atom_index
from latcpb.model.generator import load_generator
from latcpb.model.geometric import GeometryIdealizer
from latcpb.pipeline.blocks import DEFAULT_BLOCK_FRAMES, block_seed

IDEALIZE_MODES = ("standard", "full", "none", None)
MAX_ABS_COORDINATE = 1.0e5  # Å; larger input coordinates are treated as corrupt
TRACE_NOTE_RMS = 0.5        # Å RMS: frames whose CA trace moved more are counted apart in the note


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

    def universe(self, positions: np.ndarray, times=None, dimensions=None, dt=None, steps=None):
        """All-atom Universe holding ``positions`` [F, A, 3] Å as an in-memory trajectory; times [F] ps,
        dimensions [F, 6] or [6] (Å, degrees) or None, dt ps and steps [F] go to its frames."""
        return allatom_universe(self.topology, positions, times=times, dimensions=dimensions, dt=dt, steps=steps)


@dataclass
class FrameBatch:
    """One batch of backmapped frames, as ``Backmapper.iter_backmap`` yields it.

    Unpacks as ``plan, frames, positions = batch`` (the older tuple form).
    """

    plan: BackmapPlan
    frames: np.ndarray              # [b] int, input frame indices (ts.frame of the CG trajectory)
    times: np.ndarray               # [b] float, ps (ts.time of each input frame)
    dimensions: np.ndarray | None   # [b, 6] float32 (Å, degrees), or None when the input has no box
    positions: np.ndarray           # [b * samples, A, 3] float32 Å, frame-major
    samples: int = 1
    dt: float = 1.0                 # ps between consecutive selected input frames (input dt * step)
    steps: np.ndarray | None = None  # [b] int MD steps of the input frames, where the input has them
    trace_move: np.ndarray | None = None  # [b] float Å: RMS move of the CA trace (0 where the beads were kept)
    trace_valid: np.ndarray | None = None  # [b] bool: the CA trace backmapped admits valid chemistry

    def __iter__(self):
        return iter((self.plan, self.frames, self.positions))

    @property
    def output_frames(self) -> np.ndarray:
        """[b * samples] int: the input frame of every output frame."""
        return np.repeat(self.frames, self.samples)

    @property
    def output_times(self) -> np.ndarray:
        """[b * samples] float ps: samples of one frame share its time."""
        return np.repeat(self.times, self.samples)

    @property
    def output_dimensions(self) -> np.ndarray | None:
        """[b * samples, 6] float32 or None."""
        return None if self.dimensions is None else np.repeat(self.dimensions, self.samples, axis=0)

    def universe(self):
        """All-atom Universe of this batch: b * samples frames with the time, step and box of their input frame."""
        steps = None if self.steps is None else np.repeat(self.steps, self.samples)
        return self.plan.universe(self.positions, times=self.output_times, dimensions=self.output_dimensions,
                                  dt=self.dt, steps=steps)


class Backmapper:
    """Backmaps CA traces to heavy atoms with a generator (the shipped model by default).

    model: None (shipped model), "latcpb", "geometric" or a checkpoint path; samples: all-atom samples per CG
    frame; seed: makes sampling reproducible (the same seed and batch size give bit-identical output on the CPU);
    batch_size: frames per generator call; idealize: "standard" (default) imposes Engh & Huber bond lengths, ideal
    planar peptide units (cis where the CA trace is cis), planar aromatic rings, closed proline rings and L chirality
    on the generator's output, "full" also the other rigid groups (planar groups, branch points), "none" keeps the
    output as generated (``GeometryIdealizer``); skip_unknown: leave out unknown residues inside chains instead of
    refusing them; beads_as_ca: take beads not named CA (Martini BB ...) as CA positions; wrap: False (default)
    keeps every chain whole in the output, True moves every residue by the box vector its bead was wrapped by in the
    input (CA atoms exactly at the input positions); keep_beads: False (default) moves a CA trace that no chain of
    ideal peptide units can follow (CG bead spacing 2.5-5.1 Å, straight segments, beads too close) to the nearest
    trace that one can (``latcpb.geometry.ca_trace.refine_ca_trace``; atomistic traces are kept bit for bit; the
    move per frame is in ``FrameBatch.trace_move`` and summed up in one note), True keeps the beads exact as the
    output's CA atoms, invalid chemistry included (a note counts such frames); note: called with one-line notes
    (default: print to stderr); options (e.g. steps, temperature, relief_steps: clash-relief steps, 0 = off) go to
    the generator.
    """

    def __init__(self, model=None, samples=1, seed=None, device=None, batch_size=32, idealize="standard",
                 skip_unknown=False, beads_as_ca=False, wrap=False, keep_beads=False, note=None, **options):
        if samples < 1:
            raise LatcpbInputError(f"--samples {samples}: must be at least 1")
        if batch_size < 1:
            raise LatcpbInputError(f"--batch-size {batch_size}: must be at least 1")
        if options.get("relief_steps") is not None and int(options["relief_steps"]) < 0:
            raise LatcpbInputError(f"--relief-steps {options['relief_steps']}: must be 0 or more")
        self.device = resolve_device(device)
        self.generator = load_generator(model, self.device)
        if idealize not in IDEALIZE_MODES:
            raise LatcpbInputError(f"--idealize {idealize}: choose one of {', '.join(map(str, IDEALIZE_MODES))}")
        self.idealizer = (None if idealize in (None, "none") else
                          GeometryIdealizer(self.device, level=idealize))
        self.samples = samples
        self.seed = seed
        self.batch_size = batch_size
        self.skip_unknown = skip_unknown
        self.beads_as_ca = beads_as_ca
        self.wrap = wrap
        self.keep_beads = bool(keep_beads)
        self.note = note if note is not None else _stderr_note
        self.options = {k: v for k, v in options.items() if v is not None}
        self._rng = None
        self.reset_seed()

    block_frames = DEFAULT_BLOCK_FRAMES  # with a seed, every block of frames has its own random stream

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

    def select(self, universe, select=DEFAULT_SELECT, source="input"):
        """The bead AtomGroup of ``select`` to backmap (``latcpb.io.selection.select_beads``)."""
        return select_beads(universe, select, source, skip_unknown=self.skip_unknown, beads_as_ca=self.beads_as_ca,
                            note=self.note)

    def plan(self, beads, source="input", positions=None, boxes=None, frames=None) -> BackmapPlan:
        """Check and describe a CG AtomGroup (one bead per residue).

        positions [F, N, 3] Å / boxes [F, 6] or None: the frames the chain rule's spacing test checks (default: the
        current frame); frames [F]: their input frame numbers, for messages.
        """
        if positions is None:
            positions = beads.positions[None]
            boxes = None if not has_box(beads.dimensions) else np.asarray(beads.dimensions)[None]
        positions = np.asarray(positions, dtype=np.float32).reshape(-1, len(beads), 3)
        _check_coordinates(positions, source, np.arange(len(positions)) if frames is None else frames)
        topology = residue_topology(beads, positions, source=source, boxes=boxes)
        lt = LayoutTensors(topology.layout, device=self.device)
        return BackmapPlan(topology, beads, lt, slot_atom_index(topology.layout.atom_mask), source)

    def backmap_coordinates(self, plan: BackmapPlan, ca: np.ndarray, first_frame: int = 0, frames=None) -> np.ndarray:
        """CA [F, N, 3] Å -> heavy atoms [F * samples, A, 3] float32 Å (frame-major); the CA trace is refined first
        unless ``keep_beads`` (see ``Backmapper``).

        frames [F]: input frame numbers for messages (default ``first_frame + arange(F)``).
        """
        return self._generate(plan, ca, first_frame, frames)[0]

    def refine_trace(self, plan: BackmapPlan, ca: np.ndarray):
        """(CA trace [F, N, 3] float32 Å that the generator gets, its RMS move [F] Å, valid [F] bool): ``ca``
        moved by ``refine_ca_trace`` where it admits no valid chemistry (kept bit for bit where it does, and with
        ``keep_beads``); valid: the returned trace admits valid chemistry. A frame whose generated backbone is
        left beyond a bound moves again afterwards (``_admit_backbone``)."""
        result = refine_ca_trace(torch.as_tensor(ca), plan.topology.layout, keep_beads=self.keep_beads)
        return (result.ca.numpy(), result.rms.numpy().astype(np.float64).reshape(-1),
                result.valid.numpy().reshape(-1).copy())

    def _generate(self, plan, ca, first_frame=0, frames=None):
        """(heavy atoms [F * samples, A, 3] float32 Å, RMS move of the CA trace [F] Å, valid trace [F] bool)."""
        ca = np.asarray(ca, dtype=np.float32)
        if ca.ndim != 3 or ca.shape[1:] != (plan.n_residues, 3):
            raise LatcpbInputError(f"{plan.source}: expected CA coordinates of shape [frames, {plan.n_residues}, 3],"
                                   f" got {list(ca.shape)}")
        frames = first_frame + np.arange(len(ca)) if frames is None else np.asarray(frames)
        _check_coordinates(ca, plan.source, frames)
        beads = ca
        ca, _, valid = self.refine_trace(plan, ca)
        ca = np.array(ca, dtype=np.float32)       # a copy: frames whose backbone needs it move again below
        out = []
        index = torch.as_tensor(plan.atom_index, device=self.device)
        with torch.inference_mode():
            for start in range(0, len(ca), self.batch_size):
                batch = torch.as_tensor(ca[start:start + self.batch_size], device=self.device)
                xyz = self.generator.generate(batch, plan.layout_tensors, samples=self.samples, rng=self._rng,
                                              **self.options)
                if not self.keep_beads:
                    xyz, moved = self._admit_backbone(plan, batch, xyz)
                    if moved is not None:
                        ca[start:start + self.batch_size] = moved
                if self.idealizer is not None:
                    xyz = self.idealizer(xyz, plan.layout_tensors)
                flat = xyz.reshape(xyz.shape[0], -1, 3)[:, index]
                out.append(flat.float().cpu().numpy())
        result = np.concatenate(out) if out else np.zeros((0, plan.n_atoms, 3), dtype=np.float32)
        move = np.sqrt(np.square(ca.astype(np.float64) - beads).sum(-1).mean(-1))   # [F] Å: refinement + admission
        if not np.isfinite(result).all():
            bad = int(frames[int(np.nonzero(~np.isfinite(result).all(axis=(1, 2)))[0][0]) // self.samples])
            raise LatcpbInputError(f"{plan.source}: frame {bad}: the generator produced non-finite coordinates"
                                   " (degenerate CA trace?)")
        return result, move, valid

    def _admit_backbone(self, plan, batch, xyz):
        """(xyz, trace [F, N, 3] float32 numpy or None): frames of the generated xyz [F * samples, N, 15, 3] Å with
        an N-CA-C or proline phi left beyond its bound (the trace admits no valid backbone there) get their trace
        moved by ``ca_trace.admit_backbone`` and are generated again; None where no trace moved."""
        lt = plan.layout_tensors
        excess = n_ca_c_excess(xyz, lt, fraction=1.0).reshape(len(batch), -1)               # [F, samples * N]
        flagged = torch.nonzero((excess > np.radians(ADMIT_TOLERANCE_DEG)).any(-1)).flatten()
        if len(flagged) == 0:
            return xyz, None
        with torch.inference_mode(False), torch.enable_grad():
            trace, _ = admit_backbone(batch[flagged].clone(), lt)
        trace = trace.to(batch.dtype)
        changed = (trace != batch[flagged]).any(-1).any(-1)
        if not bool(changed.any()):
            return xyz, None
        flagged, trace = flagged[changed], trace[changed]
        again = self.generator.generate(trace, lt, samples=self.samples, rng=self._rng, **self.options)
        xyz = xyz.clone().view(len(batch), self.samples, *xyz.shape[1:])
        xyz[flagged] = again.view(len(flagged), self.samples, *again.shape[1:])
        moved = batch.clone()
        moved[flagged] = trace
        return xyz.view(-1, *xyz.shape[2:]), moved.cpu().numpy()

    def plan_trajectory(self, universe, select=DEFAULT_SELECT, start=None, stop=None, step=None, source=None):
        """The ``BackmapPlan`` of a CG trajectory: beads of ``select``, chains by the chain rule with its spacing test
        on up to ``CHAIN_CHECK_FRAMES`` frames spread over the selected ones. Pass it to ``iter_backmap(plan=...)``
        to backmap parts of one trajectory (blocks of frames) with the same chains."""
        source = source or _describe(universe)
        beads = self.select(universe, select, source)
        trajectory = universe.universe.trajectory
        selected = np.arange(len(trajectory))[start:stop:step]
        if len(selected) == 0:
            raise LatcpbInputError(f"{source}: no frames selected (start={start}, stop={stop}, step={step})")
        original_frame = trajectory.ts.frame
        try:
            return self.plan(beads, source, *self._sample_frames(trajectory, beads, selected, source))
        finally:
            with warnings.catch_warnings():
                warnings.simplefilter("ignore")
                trajectory[original_frame]

    def iter_backmap(self, universe, select=DEFAULT_SELECT, start=None, stop=None, step=None, source=None,
                     progress=False, plan=None) -> Iterator[FrameBatch]:
        """Stream a CG trajectory in batches of ``FrameBatch`` (plan, input frame numbers, times, boxes,
        positions [b * samples, A, 3] Å); unpacks as ``plan, frames, positions``.

        Only one batch of frames is in memory at a time. Chains wrapped across a periodic box are made whole
        (``latcpb.io.periodic``) before backmapping; the user's Universe is left as it was (frame included).
        plan: a ``plan_trajectory`` result to reuse (its beads are used; ``select`` is then ignored).
        """
        source = source or (plan.source if plan is not None else _describe(universe))
        beads = self.select(universe, select, source) if plan is None else plan.beads
        trajectory = universe.universe.trajectory
        selected = np.arange(len(trajectory))[start:stop:step]
        n_frames = len(selected)
        if n_frames == 0:
            raise LatcpbInputError(f"{source}: no frames selected (start={start}, stop={stop}, step={step})")
        frame_dt = _frame_dt(trajectory) * (1 if step is None else int(step))
        original_frame = trajectory.ts.frame
        self.reset_seed()
        bar = None
        try:
            if plan is None:
                plan = self.plan(beads, source, *self._sample_frames(trajectory, beads, selected, source))
            unwrapper = ChainUnwrapper(plan.topology.layout.chain_index)
            residue_of_atom = plan.atom_index // rc.ATOMS_PER_RESIDUE
            bar = _progress(n_frames, progress)
            moves, valids = [], []
            batch = []
            iterator = iter(trajectory[start:stop:step])
            for k in range(n_frames):
                frame = int(selected[k])
                try:
                    with warnings.catch_warnings():
                        warnings.simplefilter("ignore")
                        ts = next(iterator)
                except StopIteration:
                    raise LatcpbInputError(f"{source}: trajectory ended after {k} of {n_frames} frames") from None
                except (OSError, EOFError, ValueError, RuntimeError) as err:
                    raise LatcpbInputError(f"{source}: cannot read frame {frame} ({str(err).strip()})") from err
                raw = beads.positions.copy()
                box = np.array(ts.dimensions, dtype=np.float32) if has_box(ts.dimensions) else None  # a copy:
                # readers refill the timestep's arrays in place at the next frame
                _check_coordinates(raw[None], source, [ts.frame])
                whole = unwrapper.whole(raw, box)
                _check_spacing(whole, plan, source, ts.frame)
                batch.append((ts.frame, _frame_time(ts), box, ts.data.get("step"), whole, raw))
                if len(batch) == self.batch_size or k == n_frames - 1 or (k + 1) % self.block_frames == 0:
                    if self._rng is not None and (k + 1 - len(batch)) % self.block_frames == 0:
                        self._rng.manual_seed(block_seed(self.seed, batch[0][0]))  # each block its own stream
                    result = self._backmap_batch(plan, batch, frame_dt, residue_of_atom)
                    moves.append(result.trace_move)
                    valids.append(result.trace_valid)
                    yield result
                    bar.update(len(batch))
                    batch = []
            text = trace_note(source, np.concatenate(moves), np.concatenate(valids), self.keep_beads)
            if text:
                self.note(text)
        except BaseException:
            if bar is not None:
                bar.leave = False  # an error message follows: do not leave a half-filled bar above it
            raise
        finally:
            if bar is not None:
                bar.close()
            try:
                with warnings.catch_warnings():
                    warnings.simplefilter("ignore")
                    trajectory[original_frame]
            except Exception:  # a damaged file may not seek back; the error already raised matters more
                pass

    def _sample_frames(self, trajectory, beads, selected, source):
        """Bead positions [F, N, 3] and boxes [F, 6] (or None) of up to ``CHAIN_CHECK_FRAMES`` selected frames spread
        over the trajectory, for the chain rule's spacing test."""
        picks = np.unique(selected[np.linspace(0, len(selected) - 1, min(CHAIN_CHECK_FRAMES, len(selected)))
                                   .round().astype(int)])
        positions, boxes = [], []
        for frame in picks:
            try:
                with warnings.catch_warnings():
                    warnings.simplefilter("ignore")
                    ts = trajectory[int(frame)]
            except (IndexError, OSError, EOFError, ValueError, RuntimeError) as err:
                if len(positions):  # a damaged tail: the frame loop reports it where it is met
                    break
                raise LatcpbInputError(f"{source}: cannot read frame {frame} ({str(err).strip()})") from err
            xyz = beads.positions.copy()
            _check_coordinates(xyz[None], source, [frame])
            positions.append(xyz)
            boxes.append(np.asarray(ts.dimensions, dtype=np.float64) if has_box(ts.dimensions) else np.zeros(6))
        boxes = np.stack(boxes)
        return np.stack(positions), (boxes if np.any(boxes[:, :3] > 0) else None)

    def _backmap_batch(self, plan, batch, frame_dt, residue_of_atom) -> FrameBatch:
        frames = np.array([b[0] for b in batch], dtype=np.int64)
        times = np.array([b[1] for b in batch], dtype=np.float64)
        boxes = [b[2] for b in batch]
        dimensions = None if all(b is None for b in boxes) else np.stack(
            [np.zeros(6, np.float32) if b is None else np.asarray(b, np.float32) for b in boxes])
        steps = None if any(b[3] is None for b in batch) else np.array([b[3] for b in batch], dtype=np.int64)
        whole = np.stack([b[4] for b in batch])
        positions, move, valid = self._generate(plan, whole, frames=frames)
        if self.wrap and dimensions is not None:  # each residue back to the image its bead had in the input
            shift = np.stack([b[5] for b in batch]) - whole            # [b, N, 3] Å, lattice vectors
            positions += np.repeat(shift, self.samples, axis=0)[:, residue_of_atom]
        return FrameBatch(plan, frames, times, dimensions, positions, self.samples, frame_dt, steps, move, valid)

    def backmap_universe(self, universe, select=DEFAULT_SELECT, start=None, stop=None, step=None, progress=False):
        """All-atom Universe (in-memory trajectory, ``samples`` frames per CG frame, frame-major) of a CG Universe
        (or of the ``select`` atoms of an AtomGroup); every frame has the time, MD step and box of its input frame,
        and the trajectory's dt is the input's dt * step."""
        batches = list(self.iter_backmap(universe, select, start, stop, step, progress=progress))
        positions = np.concatenate([b.positions for b in batches])
        times = np.concatenate([b.output_times for b in batches])
        has_dims = any(b.dimensions is not None for b in batches)
        dimensions = None if not has_dims else np.concatenate([
            b.output_dimensions if b.dimensions is not None else np.zeros((len(b.positions), 6), np.float32)
            for b in batches])
        steps = None if any(b.steps is None for b in batches) else np.concatenate(
            [np.repeat(b.steps, b.samples) for b in batches])
        return batches[0].plan.universe(positions, times=times, dimensions=dimensions, dt=batches[0].dt,
                                        steps=steps)


CHAIN_CHECK_FRAMES = 10  # frames spread over the trajectory that the chain rule's spacing test checks


def trace_note(source, moves, valid, keep_beads=False) -> str | None:
    """One line on the CA traces of a run (moves [F] Å RMS, valid [F] bool, as ``FrameBatch`` has them), or None
    when every trace admitted valid chemistry as it came."""
    moves, valid = np.asarray(moves, dtype=np.float64), np.asarray(valid, dtype=bool)
    n, moved, bad = len(moves), int((moves > 0).sum()), int((~valid).sum())
    if keep_beads:
        return None if not bad else (
            f"{source}: {bad} of {n} frames have a CA trace that no chain of ideal peptide units follows (CG bead"
            " spacing, angles or contacts); their output has invalid geometry there (without --keep-beads the"
            " trace is moved as little as needed)")
    if not moved and not bad:
        return None
    large = int((moves > TRACE_NOTE_RMS).sum())
    text = (f"{source}: CA trace moved in {moved} of {n} frames to admit valid chemistry (RMS {moves.max():.2f} Å at"
            f" most, mean {moves[moves > 0].mean() if moved else 0.0:.2f} Å over moved frames")
    if large:
        text += f"; {large} frames by more than {TRACE_NOTE_RMS} Å"
    text += ")"
    if bad:
        text += f"; {bad} frames still outside the limits"
    return text + "; --keep-beads keeps the beads exact"


def _stderr_note(text: str) -> None:
    print(f"latcpb: note: {text}", file=sys.stderr)


def _frame_dt(trajectory) -> float:
    """ps between frames of a reader (1.0 where the format has no time)."""
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            dt = float(trajectory.dt)
    except Exception:  # readers without time information
        return 1.0
    return dt if np.isfinite(dt) else 1.0


def _frame_time(ts) -> float:
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        try:
            return float(ts.time)
        except Exception:  # a reader without time: the frame number
            return float(ts.frame)


def _describe(universe) -> str:
    try:
        return universe.universe.filename or "universe"
    except AttributeError:
        return "universe"


def _check_coordinates(ca, source, frames):
    """Raise for NaN/inf or absurd (> 1e5 Å) coordinates of ca [F, N, 3], naming the input frame (frames [F])."""
    bad = ~np.isfinite(ca).all(axis=(1, 2)) | (np.abs(np.nan_to_num(ca, nan=0.0, posinf=0, neginf=0))
                                               > MAX_ABS_COORDINATE).any(axis=(1, 2))
    if bad.any():
        k = int(np.nonzero(bad)[0][0])
        what = "non-finite (NaN or inf)" if not np.isfinite(ca[k]).all() else "absurd (> 1e5 Å)"
        raise LatcpbInputError(f"{source}: frame {int(frames[k])}: {what} CA coordinates")


def _check_spacing(whole, plan, source, frame):
    """Raise naming the frame where consecutive beads of one chain are further apart than ``MAX_BEAD_SPACING``
    after the chains were made whole (a broken or garbled frame)."""
    chain = plan.topology.layout.chain_index
    same = chain[1:] == chain[:-1]
    spacing = np.linalg.norm(whole[1:] - whole[:-1], axis=-1)
    bad = np.flatnonzero(same & (spacing > MAX_BEAD_SPACING))
    if len(bad):
        i = int(bad[0])
        t = plan.topology
        a = describe_residue(t.output_resnames[i], t.resids[i], t.chain_ids[i])
        b = describe_residue(t.output_resnames[i + 1], t.resids[i + 1], t.chain_ids[i + 1])
        extra = f" and {len(bad) - 1} more pairs" if len(bad) > 1 else ""
        raise LatcpbInputError(
            f"{source}: frame {int(frame)}: beads {a} and {b} of one chain are {spacing[i]:.1f} Å apart{extra} after"
            f" making chains whole (more than {MAX_BEAD_SPACING} Å: an unphysical CG bond)")


def _progress(total, enabled):
    from tqdm.auto import tqdm
    return tqdm(total=total, unit="frame", disable=not enabled, desc="backmapping")


def backmap_universe(universe, select=DEFAULT_SELECT, model=None, samples=1, seed=None, batch_size=32, device=None,
                     start=None, stop=None, step=None, idealize="standard", skip_unknown=False, beads_as_ca=False,
                     wrap=False, keep_beads=False, backend=None, n_workers=None, **options):
    """Backmap a CG MDAnalysis Universe (or AtomGroup, e.g. ``u.select_atoms("protein")``); returns an all-atom
    Universe with an in-memory trajectory that keeps the input's frame times, dt and boxes.

    ``samples`` all-atom frames are produced per CG frame (frame-major; they share its time). See ``Backmapper``
    for the options. backend ("serial", "multiprocessing", "dask") and n_workers (MDAnalysis 2.8 convention) run
    the frames in blocks on worker processes (``latcpb.pipeline.runs.backmap_universe``; a ``client`` option gives
    a dask.distributed cluster): the same seed gives the same coordinates for any backend and number of workers.
    """
    if backend is not None or n_workers is not None or "client" in options:
        from latcpb.pipeline.runs import backmap_universe as blocks_backmap_universe

        return blocks_backmap_universe(universe, select, backend=backend, n_workers=n_workers, start=start,
                                       stop=stop, step=step, seed=seed, model=model, samples=samples,
                                       batch_size=batch_size, device=device, idealize=idealize,
                                       skip_unknown=skip_unknown, beads_as_ca=beads_as_ca, wrap=wrap,
                                       keep_beads=keep_beads, **options)
    backmapper = Backmapper(model=model, samples=samples, seed=seed, device=device, batch_size=batch_size,
                            idealize=idealize, skip_unknown=skip_unknown, beads_as_ca=beads_as_ca, wrap=wrap,
                            keep_beads=keep_beads, **options)
    return backmapper.backmap_universe(universe, select=select, start=start, stop=stop, step=step)
