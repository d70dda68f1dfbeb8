"""Checkpoints cannot run code: every checkpoint is read with ``torch.load(weights_only=True)``; a pickle whose
``__reduce__`` would create a file (through ``os.system`` or ``exec``) is refused with one line naming it, by
``load_generator`` and by ``latcpb-backmap --model PATH``, and the file never appears. The shipped weights and
training checkpoints (optimizer, RNG states) are plain data and load that way."""
from __future__ import annotations

import os
import pickle
import subprocess

import numpy as np
import pytest
import torch

from conftest import REPO, backmap_command
from latcpb.errors import LatcpbInputError
from latcpb.model import SHIPPED_WEIGHTS, load_generator
from latcpb.training.checkpoint import FORMAT, load_checkpoint, save_checkpoint

T0922 = REPO / "tests" / "data" / "mini" / "T0922.pdb"


class ShellPayload:
    """Unpickling this runs ``touch <marker>`` in a shell."""

    def __init__(self, marker):
        self.marker = str(marker)

    def __reduce__(self):
        return os.system, (f"touch '{self.marker}'",)


class ExecPayload:
    """Unpickling this runs Python that writes ``<marker>``."""

    def __init__(self, marker):
        self.marker = str(marker)

    def __reduce__(self):
        return exec, (f"open({self.marker!r}, 'w').write('pwned')",)


def malicious_files(tmp_path, marker):
    """Three .pt files that run code when unpickled: a torch.save zip that looks like a LatCPB checkpoint, a bare
    payload, and a legacy (non-zip) pickle."""
    disguised = tmp_path / "disguised.pt"
    torch.save({"format": FORMAT, "config": {"model": {}}, "model": {"w": torch.zeros(2)},
                "steps": ShellPayload(marker)}, disguised)
    bare = tmp_path / "bare.pt"
    torch.save(ExecPayload(marker), bare)
    legacy = tmp_path / "legacy.pt"
    with open(legacy, "wb") as fh:
        pickle.dump({"format": FORMAT, "model": ShellPayload(marker)}, fh, protocol=2)
    return [disguised, bare, legacy]


def test_payloads_really_run_code_when_unpickled(tmp_path):
    """Control: the payloads used below do create their marker when loaded without weights_only."""
    for payload in (ShellPayload, ExecPayload):
        marker = tmp_path / f"control_{payload.__name__}"
        pickle.loads(pickle.dumps(payload(marker)))
        assert marker.exists()


def test_load_generator_refuses_code_carrying_checkpoint(tmp_path):
    marker = tmp_path / "marker_api"
    for path in malicious_files(tmp_path, marker):
        with pytest.raises(LatcpbInputError) as err:
            load_generator(str(path))
        msg = str(err.value)
        assert "\n" not in msg and str(path) in msg and "refused" in msg, msg
        with pytest.raises(LatcpbInputError, match="refused"):
            load_checkpoint(str(path))
    assert not marker.exists()


def test_cli_refuses_code_carrying_checkpoint(tmp_path):
    marker = tmp_path / "marker_cli"
    path = malicious_files(tmp_path, marker)[0]
    out = tmp_path / "aa.pdb"
    result = subprocess.run([*backmap_command(), str(T0922), "-o", str(out), "--model", str(path), "--quiet"],
                            capture_output=True, text=True, timeout=300, cwd=tmp_path)
    assert result.returncode == 2, result.stderr
    lines = [line for line in result.stderr.splitlines() if line.strip()]
    assert len(lines) == 1, result.stderr
    assert str(path) in lines[0] and "refused" in lines[0], lines[0]
    assert "Traceback" not in result.stderr
    assert not marker.exists()
    assert not out.exists()


def test_damaged_file_is_not_called_unsafe(tmp_path):
    path = tmp_path / "cut.pt"
    torch.save({"format": FORMAT, "config": {}, "model": {"w": torch.zeros(1000)}}, path)
    path.write_bytes(path.read_bytes()[:300])
    with pytest.raises(LatcpbInputError, match="corrupted or truncated") as err:
        load_checkpoint(str(path))
    assert str(path) in str(err.value)


@pytest.mark.skipif(not os.path.exists(SHIPPED_WEIGHTS), reason="shipped weights not trained yet")
def test_shipped_weights_are_plain_data():
    state = torch.load(SHIPPED_WEIGHTS, map_location="cpu", weights_only=True)
    assert state["format"] == FORMAT
    assert state["model"] and all(isinstance(v, torch.Tensor) for v in state["model"].values())
    assert os.path.getsize(SHIPPED_WEIGHTS) <= 25 * 2 ** 20


def test_training_state_round_trips_as_plain_data(tmp_path):
    """numpy RNG states and numpy scalars (validation figures) are stored as lists/numbers and restore exactly."""
    import random

    np.random.seed(11)
    random.seed(11)
    rng = np.random.default_rng(5)
    rng.random(3)
    path = tmp_path / "last.pt"
    save_checkpoint(str(path), {"config": {"seed": 1}, "model": {"w": torch.arange(3.0)},
                                "numpy_rng": np.random.get_state(), "python_rng": random.getstate(),
                                "torch_rng": torch.get_rng_state(), "sampler": {"rng": rng.bit_generator.state},
                                "best": {"heavy": np.float64(1.25), "step": np.int64(7)}})
    expect_np, expect_py, expect_gen = np.random.random(4), random.random(), rng.random(4)
    state = torch.load(path, weights_only=True)
    assert state["best"] == {"heavy": 1.25, "step": 7}
    np.random.set_state(state["numpy_rng"])
    random.setstate(state["python_rng"])
    rng2 = np.random.default_rng()
    rng2.bit_generator.state = state["sampler"]["rng"]
    assert np.array_equal(np.random.random(4), expect_np)
    assert random.random() == expect_py
    assert np.array_equal(rng2.random(4), expect_gen)
