"""The work folder of a resumable run: complete blocks on disk plus a manifest of the run's parameters.

Layout: ``<folder>/manifest.json`` (the parameters that decide the output) and ``<folder>/block-000000.npz`` ...
(one ``BlockResult`` each, written under a temporary name and renamed, so a file present is complete). A resumed
run must have the same manifest; it skips the blocks whose files are present.
"""
from __future__ import annotations

import json
import os
import pickle
import shutil
import tempfile

import numpy as np

from latcpb.errors import LatcpbInputError
from latcpb.pipeline.blocks import Block, BlockResult

MANIFEST = "manifest.json"
TOPOLOGY = "topology.pickle"  # the run's ResidueTopology (this folder's own data only)
WORK_SUFFIX = ".latcpb-work"
MANIFEST_VERSION = 1


def work_folder_for(output: str, work_dir: str | None = None) -> str:
    """``OUTPUT.latcpb-work`` beside the output, or inside ``work_dir`` when given."""
    parent = work_dir if work_dir is not None else os.path.dirname(os.path.abspath(output))
    return os.path.join(parent, os.path.basename(output) + WORK_SUFFIX)


def input_identity(path: str | None) -> dict | None:
    """What identifies an input file for resume: absolute path and size in bytes (None for no file)."""
    if path is None:
        return None
    path = os.path.abspath(path)
    return {"path": path, "bytes": os.path.getsize(path) if os.path.isfile(path) else None}


class WorkFolder:
    """Blocks of one run under ``path``; ``parameters`` (JSON-serialisable) is the run's manifest."""

    def __init__(self, path: str, parameters: dict, resume: bool = False):
        self.path = path
        self.parameters = {"version": MANIFEST_VERSION, **json.loads(json.dumps(parameters))}
        manifest = os.path.join(path, MANIFEST)
        if os.path.exists(manifest):
            if not resume:
                raise LatcpbInputError(f"{path}: a work folder of an earlier run exists; rerun with --resume to"
                                       " continue it, or delete it")
            with open(manifest, encoding="utf-8") as fh:
                try:
                    previous = json.load(fh)
                except ValueError as err:
                    raise LatcpbInputError(f"{manifest}: unreadable manifest ({err}); delete {path}") from err
            differences = _differences(previous, self.parameters)
            if differences:
                raise LatcpbInputError(f"--resume: {path} was made with other parameters ({'; '.join(differences)});"
                                       " rerun with the same options or delete it")
        else:
            if os.path.isdir(path) and os.listdir(path):
                raise LatcpbInputError(f"{path}: exists and is not a LatCPB work folder (no {MANIFEST})")
            try:
                os.makedirs(path, exist_ok=True)
            except OSError as err:
                raise LatcpbInputError(f"{path}: cannot create the work folder ({err.strerror})") from err
            _write_json(manifest, self.parameters)

    def block_path(self, index: int) -> str:
        return os.path.join(self.path, f"block-{index:06d}.npz")

    def load(self, block: Block) -> BlockResult:
        """The saved result of ``block`` (check ``is_done`` first)."""
        try:
            return BlockResult.load(self.block_path(block.index))
        except (OSError, ValueError, KeyError) as err:
            raise LatcpbInputError(f"{self.block_path(block.index)}: unreadable block ({err}); delete {self.path}"
                                   " and run again") from err

    def is_done(self, block: Block) -> bool:
        """Whether a complete file of ``block`` is present (only its frame list is read)."""
        try:
            with np.load(self.block_path(block.index)) as data:
                return tuple(int(f) for f in data["frames"]) == tuple(block.frames)
        except (OSError, ValueError, KeyError):
            return False

    def done_blocks(self) -> list[str]:
        """Names of the block files present."""
        return sorted(n for n in os.listdir(self.path) if n.startswith("block-") and n.endswith(".npz"))

    def save(self, result: BlockResult) -> None:
        """Save a block (and, with the first block saved, the run's topology)."""
        if result.topology is not None and not os.path.exists(os.path.join(self.path, TOPOLOGY)):
            fd, tmp = tempfile.mkstemp(prefix=".topology.", suffix=".partial", dir=self.path)
            with os.fdopen(fd, "wb") as fh:
                pickle.dump(result.topology, fh)
            os.replace(tmp, os.path.join(self.path, TOPOLOGY))
        result.save(self.block_path(result.index))

    def save_text(self, name: str, text: str) -> None:
        fd, tmp = tempfile.mkstemp(prefix=f".{name}.", suffix=".partial", dir=self.path)
        with os.fdopen(fd, "w", encoding="utf-8") as fh:
            fh.write(text)
        os.replace(tmp, os.path.join(self.path, name))

    def load_text(self, name: str) -> str | None:
        """A text file saved by ``save_text``, or None."""
        path = os.path.join(self.path, name)
        if not os.path.exists(path):
            return None
        with open(path, encoding="utf-8") as fh:
            return fh.read()

    def load_topology(self):
        """The ``ResidueTopology`` saved with the first block."""
        with open(os.path.join(self.path, TOPOLOGY), "rb") as fh:
            return pickle.load(fh)

    def remove(self) -> None:
        shutil.rmtree(self.path, ignore_errors=True)


def _differences(previous: dict, current: dict, prefix: str = "") -> list[str]:
    """'key: old -> new' for every parameter that differs (nested dicts by dotted key)."""
    out = []
    for key in sorted(set(previous) | set(current)):
        old, new = previous.get(key), current.get(key)
        if isinstance(old, dict) and isinstance(new, dict):
            out += _differences(old, new, f"{prefix}{key}.")
        elif old != new:
            out.append(f"{prefix}{key}: {old!r} then, {new!r} now")
    return out


def _write_json(path: str, data: dict) -> None:
    fd, tmp = tempfile.mkstemp(prefix=".manifest.", suffix=".partial", dir=os.path.dirname(path))
    with os.fdopen(fd, "w", encoding="utf-8") as fh:
        json.dump(data, fh, indent=1, sort_keys=True)
    os.replace(tmp, path)
