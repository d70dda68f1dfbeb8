"""Checkpoints: plain data only (loaded with ``torch.load(weights_only=True)``, so a file can never run code),
atomic writes (temp file, then rename), config carried inside, clear errors for bad or unsafe files."""
from __future__ import annotations

import os
import pickle

import numpy as np
import torch

from latcpb.errors import LatcpbInputError

FORMAT = "latcpb-checkpoint-1"


def plain_data(value):
    """``value`` with numpy arrays and scalars turned into lists and Python numbers (dicts, lists, tuples walked).

    Everything else a checkpoint holds (tensors, str, int, float, bool, None) is kept as it is. ``np.random.set_state``
    and friends accept the lists back, so RNG states survive the round trip bit-exactly."""
    if isinstance(value, dict):
        items = {k: plain_data(v) for k, v in value.items()}
        if all(items[k] is v for k, v in value.items()):
            return value  # nothing converted: keep the object (an OrderedDict's _metadata included)
        return items
    if isinstance(value, (list, tuple)):
        items = [plain_data(v) for v in value]
        if all(a is b for a, b in zip(items, value)):
            return value
        return tuple(items) if isinstance(value, tuple) else items
    if isinstance(value, (np.ndarray, np.generic)):
        return value.tolist()
    return value


def save_checkpoint(path, state):
    """Write ``state`` (a dict with at least 'config' and 'model') to ``path`` atomically, as plain data."""
    state = plain_data(dict(state, format=FORMAT))
    os.makedirs(os.path.dirname(os.path.abspath(path)) or ".", exist_ok=True)
    tmp = f"{path}.tmp{os.getpid()}"
    torch.save(state, tmp)
    os.replace(tmp, path)


def _unsafe(exc: Exception) -> bool:
    """True where ``torch.load(weights_only=True)`` refused a Python object (not a damaged file)."""
    text = str(exc)
    return isinstance(exc, pickle.UnpicklingError) and ("Weights only load failed" in text
                                                        or "Unsupported global" in text)


def load_checkpoint(path, map_location="cpu"):
    """Read a checkpoint with ``weights_only=True``; a missing, truncated, foreign or code-carrying file raises
    ``LatcpbInputError`` naming it (the file's code never runs)."""
    if not os.path.exists(path):
        raise LatcpbInputError(f"{path}: checkpoint not found")
    try:
        state = torch.load(path, map_location=map_location, weights_only=True)
    except Exception as exc:  # noqa: BLE001 - torch raises many types for damaged files
        if _unsafe(exc):
            raise LatcpbInputError(f"{path}: refused: it holds Python objects, not only tensors and plain data "
                                   "(loading it could run code); only weights-only checkpoints are loaded") from None
        raise LatcpbInputError(f"{path}: not a readable LatCPB checkpoint (corrupted or truncated: "
                               f"{type(exc).__name__})") from None
    if not isinstance(state, dict) or state.get("format") != FORMAT or "model" not in state or "config" not in state:
        raise LatcpbInputError(f"{path}: not a LatCPB checkpoint (format tag {FORMAT!r} missing)")
    return state


def model_from_checkpoint(path, map_location="cpu"):
    """(model in eval mode, checkpoint dict) from a checkpoint file; fp16 weights are cast to fp32."""
    from latcpb.model.latcpb_model import LatCPB

    state = load_checkpoint(path, map_location)
    if not isinstance(state["model"], dict) or not all(isinstance(v, torch.Tensor) for v in state["model"].values()):
        raise LatcpbInputError(f"{path}: 'model' is not a dict of tensors")
    model = LatCPB(state["config"]["model"])
    weights = {k: (v.float() if torch.is_floating_point(v) else v) for k, v in state["model"].items()}
    try:
        model.load_state_dict(weights)
    except RuntimeError as exc:
        first = str(exc).strip().splitlines()[0]
        raise LatcpbInputError(f"{path}: weights do not match the model of its config ({first})") from None
    return model.eval(), state
