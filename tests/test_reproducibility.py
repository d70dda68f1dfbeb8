"""Seeds: the same seed gives bit-identical output on the CPU, different seeds give different samples.

The stochastic generator is a real LatCPB network (the tiny config, randomly initialised, saved as a checkpoint
in tmp), so these tests need no trained weights; the shipped model is tested too where it exists."""
from __future__ import annotations

import json
from importlib import resources

import numpy as np
import pytest
import torch
from click.testing import CliRunner

import latcpb
from conftest import quiet_universe, write_cg
from latcpb.cli.backmap import main
from latcpb.model.generator import shipped_weights_path


@pytest.fixture(scope="module")
def tiny_checkpoint(tmp_path_factory):
    from latcpb.model.latcpb_model import LatCPB
    from latcpb.training.checkpoint import save_checkpoint
    from latcpb.training.trainer import full_config

    config = full_config(json.loads(resources.files("latcpb").joinpath("configs", "tiny.json").read_text()))
    torch.manual_seed(0)
    model = LatCPB(config["model"])
    path = tmp_path_factory.mktemp("ckpt") / "tiny.pt"
    save_checkpoint(str(path), {"config": config, "model": model.state_dict()})
    return str(path)


@pytest.fixture(scope="module")
def cg(tmp_path_factory, val_dir):
    d = tmp_path_factory.mktemp("cg")
    u = quiet_universe(val_dir / "2JOF.pdb", val_dir / "2JOF.xtc")
    top, traj = write_cg(u, d, frames=range(4))
    return {"dir": d, "top": str(top), "traj": str(traj)}


def _coords(u):
    return np.stack([ts.positions.copy() for ts in u.trajectory])


def _run_cli(out, cg, model, seed, samples=2):
    args = [cg["traj"], "--top", cg["top"], "-o", str(out), "--model", model, "--samples", str(samples),
            "--quiet", "--batch-size", "2", "--device", "cpu"]
    if seed is not None:
        args += ["--seed", str(seed)]
    result = CliRunner().invoke(main, args)
    assert result.exit_code == 0, (result.stderr, result.exception)
    return _coords(quiet_universe(out.with_suffix(".pdb"), out))


def test_stochastic_same_seed_bit_identical_cli(tmp_path, cg, tiny_checkpoint):
    a = _run_cli(tmp_path / "a.dcd", cg, tiny_checkpoint, seed=11)
    b = _run_cli(tmp_path / "b.dcd", cg, tiny_checkpoint, seed=11)
    assert a.shape[0] == 8 and np.isfinite(a).all()
    assert np.array_equal(a, b)
    assert (tmp_path / "a.dcd").read_bytes() == (tmp_path / "b.dcd").read_bytes()
    # a different seed gives different samples (beyond the CA, which is kept)
    c = _run_cli(tmp_path / "c.dcd", cg, tiny_checkpoint, seed=12)
    assert np.abs(a - c).max() > 0.05
    # the two samples of one frame differ from each other
    assert np.abs(a[0] - a[1]).max() > 0.05


def test_stochastic_api_seed(cg, tiny_checkpoint):
    u = quiet_universe(cg["top"], cg["traj"])
    bm = latcpb.Backmapper(model=tiny_checkpoint, samples=2, seed=5, batch_size=2, device="cpu")
    first = _coords(bm.backmap_universe(u))
    again = _coords(bm.backmap_universe(u))  # the stream restarts from the seed on every run
    fresh = _coords(latcpb.backmap_universe(u, model=tiny_checkpoint, samples=2, seed=5, batch_size=2,
                                            device="cpu"))
    assert np.array_equal(first, again) and np.array_equal(first, fresh)
    other = _coords(latcpb.backmap_universe(u, model=tiny_checkpoint, samples=2, seed=6, batch_size=2,
                                            device="cpu"))
    assert np.abs(first - other).max() > 0.05
    # the input CA is kept in every sample
    ca = u.select_atoms("name CA")
    out = latcpb.backmap_universe(u, model=tiny_checkpoint, samples=2, seed=5, batch_size=2, device="cpu")
    ca_out = out.select_atoms("name CA")
    for k, ts in enumerate(out.trajectory):
        u.trajectory[k // 2]
        assert np.abs(ca_out.positions - ca.positions).max() < 0.01


def test_geometric_is_deterministic(tmp_path, cg):
    a = _run_cli(tmp_path / "a.dcd", cg, "geometric", seed=None)
    b = _run_cli(tmp_path / "b.dcd", cg, "geometric", seed=3)
    assert np.array_equal(a, b)


@pytest.mark.skipif(shipped_weights_path() is None, reason="no shipped weights (latcpb/weights/latcpb.pt)")
def test_default_model_seed(tmp_path, cg):
    u = quiet_universe(cg["top"], cg["traj"])
    a = _coords(latcpb.backmap_universe(u, samples=2, seed=21, stop=2, device="cpu"))
    b = _coords(latcpb.backmap_universe(u, samples=2, seed=21, stop=2, device="cpu"))
    c = _coords(latcpb.backmap_universe(u, samples=2, seed=22, stop=2, device="cpu"))
    assert np.array_equal(a, b)
    assert np.abs(a - c).max() > 0.01
