"""Frame blocks: the unit of parallel work, of resume and of the random stream.

A run's selected frames are cut into blocks of ``block_frames`` consecutive selected frames. Each block is
backmapped with its own random stream, ``block_seed(seed, first_frame)``, so the output for a given seed does not
depend on how many workers share the blocks, nor on their order.
"""
from __future__ import annotations

import os
import tempfile
from dataclasses import dataclass

import numpy as np

DEFAULT_BLOCK_FRAMES = 128  # frames per block: ~2 MB of output per block at 150 residues


@dataclass(frozen=True)
class Block:
    """One block: its position in the run and the input frame indices it covers."""

    index: int
    frames: tuple  # input frame indices (ts.frame), increasing

    @property
    def first_frame(self) -> int:
        return self.frames[0]

    def __len__(self) -> int:
        return len(self.frames)


def split_blocks(frame_indices, block_frames: int = DEFAULT_BLOCK_FRAMES) -> list[Block]:
    """Cut the selected input frame indices [F] into blocks of ``block_frames`` (the last one may be shorter)."""
    if block_frames < 1:
        raise ValueError(f"block_frames must be at least 1, got {block_frames}")
    frames = [int(f) for f in frame_indices]
    return [Block(k, tuple(frames[s:s + block_frames])) for k, s in enumerate(range(0, len(frames), block_frames))]


def selected_frames(n_frames: int, start=None, stop=None, step=None) -> range:
    """Input frame indices that ``trajectory[start:stop:step]`` visits."""
    return range(*slice(start, stop, step).indices(n_frames))


def block_seed(seed, first_frame: int) -> int | None:
    """Seed of the random stream of the block that starts at input frame ``first_frame`` (None: unseeded).

    Derived with numpy's SeedSequence from (seed, first_frame): independent streams for neighbouring blocks, and
    the same stream whoever computes the block.
    """
    if seed is None:
        return None
    words = np.random.SeedSequence([int(seed) & 0xFFFFFFFFFFFFFFFF, int(first_frame)]).generate_state(2)
    return int((int(words[0]) << 31) ^ int(words[1])) & 0x7FFFFFFFFFFFFFFF  # 63 bits: fits torch.manual_seed


@dataclass
class BlockResult:
    """The backmapped frames of one block.

    frames [b] int64 input frame indices; times [b] float64 ps; dimensions [b, 6] float32 (Å, degrees) or None
    when the input has no box; positions [b * samples, A, 3] float32 Å, frame-major; steps [b] int MD steps or None;
    dt: ps between selected input frames; topology: the ``ResidueTopology`` of the block's plan (in memory only).
    """

    index: int
    frames: np.ndarray
    times: np.ndarray
    dimensions: np.ndarray | None
    positions: np.ndarray
    samples: int = 1
    steps: np.ndarray | None = None
    dt: float = 1.0
    topology: object = None
    reports: list | None = None      # relaxation: one FrameReport per output frame
    topology_pdb: str | None = None  # relaxation with hydrogens: PDB text of the output topology
    trace_move: np.ndarray | None = None   # [b] Å RMS move of each frame's CA trace (FrameBatch.trace_move)
    trace_valid: np.ndarray | None = None  # [b] bool: the backmapped CA trace admits valid chemistry

    @property
    def n_output_frames(self) -> int:
        return len(self.positions)

    def output_times(self) -> np.ndarray:
        """[b * samples] ps: the samples of a frame share its time."""
        return np.repeat(self.times, self.samples)

    def output_dimensions(self) -> np.ndarray | None:
        """[b * samples, 6] or None: the samples of a frame share its box."""
        return None if self.dimensions is None else np.repeat(self.dimensions, self.samples, axis=0)

    def output_steps(self) -> np.ndarray | None:
        return None if self.steps is None else np.repeat(self.steps, self.samples)

    def save(self, path: str) -> None:
        """Write as ``.npz`` under a temporary name, then rename: a block file on disk is always complete."""
        directory = os.path.dirname(os.path.abspath(path))
        fd, tmp = tempfile.mkstemp(prefix=".block.", suffix=".npz.partial", dir=directory)
        try:
            with os.fdopen(fd, "wb") as fh:
                arrays = {"index": np.int64(self.index), "frames": self.frames.astype(np.int64),
                          "times": self.times.astype(np.float64), "samples": np.int64(self.samples),
                          "positions": self.positions.astype(np.float32), "dt": np.float64(self.dt)}
                if self.dimensions is not None:
                    arrays["dimensions"] = self.dimensions.astype(np.float32)
                if self.steps is not None:
                    arrays["steps"] = self.steps.astype(np.int64)
                if self.reports is not None:
                    from latcpb.pipeline.relax_stage import dump_reports
                    arrays["reports"] = dump_reports(self.reports)
                if self.topology_pdb is not None:
                    arrays["topology_pdb"] = np.array(self.topology_pdb)
                if self.trace_move is not None:
                    arrays["trace_move"] = self.trace_move.astype(np.float64)
                    arrays["trace_valid"] = self.trace_valid.astype(bool)
                np.savez(fh, **arrays)
            os.replace(tmp, path)
        except BaseException:
            if os.path.exists(tmp):
                os.unlink(tmp)
            raise

    @classmethod
    def load(cls, path: str) -> "BlockResult":
        from latcpb.pipeline.relax_stage import load_reports

        with np.load(path) as data:
            return cls(index=int(data["index"]), frames=data["frames"], times=data["times"],
                       dimensions=data["dimensions"] if "dimensions" in data.files else None,
                       positions=data["positions"], samples=int(data["samples"]),
                       steps=data["steps"] if "steps" in data.files else None, dt=float(data["dt"]),
                       reports=load_reports(data["reports"]) if "reports" in data.files else None,
                       topology_pdb=str(data["topology_pdb"]) if "topology_pdb" in data.files else None,
                       trace_move=data["trace_move"] if "trace_move" in data.files else None,
                       trace_valid=data["trace_valid"] if "trace_valid" in data.files else None)
