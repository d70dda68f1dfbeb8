"""Checkpoints: atomic writes (temp file, then rename), config carried inside, clear errors for bad files."""
from __future__ import annotations

import os

import torch

from latcpb.errors import LatcpbInputError

FORMAT = "latcpb-checkpoint-1"


def save_checkpoint(path, state):
    """Write ``state`` (a dict with at least 'config' and 'model') to ``path`` atomically."""
    state = dict(state, format=FORMAT)
    os.makedirs(os.path.dirname(os.path.abspath(path)) or ".", exist_ok=True)
    tmp = f"{path}.tmp{os.getpid()}"
    torch.save(state, tmp)
    os.replace(tmp, path)


def load_checkpoint(path, map_location="cpu"):
    """Read a checkpoint; a missing, truncated or foreign file raises ``LatcpbInputError`` naming it."""
    if not os.path.exists(path):
        raise LatcpbInputError(f"{path}: checkpoint not found")
    try:
        state = torch.load(path, map_location=map_location, weights_only=False)
    except Exception as exc:  # noqa: BLE001 - torch raises many types for damaged files
        raise LatcpbInputError(f"{path}: not a readable LatCPB checkpoint (corrupted or truncated: "
                               f"{type(exc).__name__})") from None
    if not isinstance(state, dict) or state.get("format") != FORMAT or "model" not in state or "config" not in state:
        raise LatcpbInputError(f"{path}: not a LatCPB checkpoint (format tag {FORMAT!r} missing)")
    return state


def model_from_checkpoint(path, map_location="cpu"):
    """(model in eval mode, checkpoint dict) from a checkpoint file; fp16 weights are cast to fp32."""
    from latcpb.model.latcpb_model import LatCPB

    state = load_checkpoint(path, map_location)
    model = LatCPB(state["config"]["model"])
    weights = {k: (v.float() if torch.is_floating_point(v) else v) for k, v in state["model"].items()}
    try:
        model.load_state_dict(weights)
    except RuntimeError as exc:
        first = str(exc).strip().splitlines()[0]
        raise LatcpbInputError(f"{path}: weights do not match the model of its config ({first})") from None
    return model.eval(), state
