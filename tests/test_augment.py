"""CG-like perturbations of CA traces for training (latcpb.training.augment)."""
import os
import warnings

import MDAnalysis as mda
import numpy as np
import pytest
import torch

from latcpb.errors import LatcpbInputError
from latcpb.geometry.ca_trace import trace_violations
from latcpb.geometry.residue_constants import RESTYPE_INDEX
from latcpb.training.augment import (CGPerturbation, augment_batch, cg_like_trace, jitter_beads,
                                     straighten_segments)

DATA = os.path.join(os.path.dirname(__file__), "data", "mini")


@pytest.fixture(scope="module")
def trace():
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        u = mda.Universe(os.path.join(DATA, "T0922.pdb"))
    ca = u.select_atoms("name CA")
    return torch.tensor(ca.positions, dtype=torch.float64), np.array([RESTYPE_INDEX[r] for r in ca.resnames])


def _spacing(x):
    return torch.linalg.norm(x[..., 1:, :] - x[..., :-1, :], dim=-1)


def test_reproducible_by_seed(trace):
    ca, _ = trace
    chain = np.zeros(len(ca), dtype=int)
    frames = ca.expand(4, -1, -1)
    a = cg_like_trace(frames, chain, CGPerturbation(), torch.Generator().manual_seed(5))
    b = cg_like_trace(frames, chain, CGPerturbation(), torch.Generator().manual_seed(5))
    c = cg_like_trace(frames, chain, CGPerturbation(), torch.Generator().manual_seed(6))
    assert torch.equal(a, b)
    assert not torch.equal(a, c)


def test_stays_within_its_stated_ranges(trace):
    ca, _ = trace
    n = len(ca)
    two_chains = np.repeat([0, 1], [n // 2, n - n // 2])
    params = CGPerturbation()
    g = torch.Generator().manual_seed(0)
    out = cg_like_trace(ca.expand(32, -1, -1), two_chains, params, g)
    d = _spacing(out)
    same = torch.as_tensor(two_chains[1:] == two_chains[:-1])
    lo, hi = params.spacing
    assert float(d[:, same].min()) >= lo and float(d[:, same].max()) <= hi
    assert float((out - ca).norm(dim=-1).max()) <= params.max_total_shift + 1e-9
    # it is CG-like: the spread of the spacing reaches far beyond the atomistic 3.6-4.0 Å
    assert float(d[:, same].min()) < 3.0 and float(d[:, same].max()) > 4.5
    assert (trace_violations(out, two_chains).residues.float().mean(-1) > 0.1).all()
    # the break between the chains is not touched as a step (it stays whatever it was)
    jitter = jitter_beads(ca, two_chains, 0.3, 0.3, params.max_shift, torch.Generator().manual_seed(1))
    assert float((jitter - ca).norm(dim=-1).max()) <= params.max_shift + 1e-9


def test_straightened_segments_are_straight(trace):
    ca, _ = trace
    chain = np.zeros(len(ca), dtype=int)
    out = straighten_segments(ca, chain, fraction=0.5, length_range=(5, 5), spacing_range=(3.0, 4.2),
                              generator=torch.Generator().manual_seed(2))
    changed = (out != ca).any(-1)
    assert changed.any()
    u = out[:-2] - out[1:-1]
    v = out[2:] - out[1:-1]
    ang = torch.rad2deg(torch.acos(((u * v).sum(-1) / (u.norm(dim=-1) * v.norm(dim=-1))).clamp(-1, 1)))
    assert float(ang[changed[1:-1]].min()) > 179.0   # every moved bead sits on a straight line
    d = _spacing(out)
    assert float(d.min()) >= 3.0 - 1e-9 and float(d.max()) <= 4.2 + 1e-9


def test_augment_batch_follows_the_new_trace(trace):
    from latcpb.training.dataset import pack_crops

    ca, restype = trace
    n = len(ca)
    xyz = np.zeros((n, 15, 3), dtype=np.float32)
    xyz[:, 1] = ca.numpy()
    xyz[:, 0] = ca.numpy() + np.array([1.0, 0.3, 0.0], dtype=np.float32)
    present = np.zeros((n, 15), dtype=bool)
    present[:, :2] = True
    crop = (xyz, present, restype, np.zeros(n, dtype=int), np.eye(1, n, n - 1, dtype=bool)[0], np.ones(n, bool))
    batch = pack_crops([crop, crop])
    out = augment_batch(batch, {"probability": 1.0}, torch.Generator().manual_seed(0))
    new_ca = out.xyz[:, 1]
    assert not torch.equal(new_ca, batch.xyz[:, 1])
    assert not trace_violations(new_ca.double(), batch.layout).residues.any()   # refined, as inference does
    # residue geometry kept: N moved with its CA
    assert torch.allclose(out.xyz[:, 0] - new_ca, batch.xyz[:, 0] - batch.xyz[:, 1], atol=1e-5)
    kept = augment_batch(batch, {"targets": "keep", "refine": False}, torch.Generator().manual_seed(0))
    assert torch.equal(kept.xyz[:, 0], batch.xyz[:, 0])
    none = augment_batch(batch, {"probability": 0.0, "refine": False}, torch.Generator().manual_seed(0))
    assert torch.equal(none.xyz, batch.xyz)
    with pytest.raises(LatcpbInputError, match="unknown keys"):
        augment_batch(batch, {"noise": 1.0}, torch.Generator().manual_seed(0))


def test_trainer_runs_with_augmentation(tmp_path):
    import json

    from latcpb.training.trainer import Trainer

    model = {"width": 32, "latent_dim": 8, "n_codes": 8, "code_dim": 16, "cg_conv_width": 8, "aa_atom_width": 8,
             "cg_layers": 1, "decoder_layers": 1, "denoiser_layers": 1, "diffusion_steps": 50}
    train = {"batch_size": 2, "autoencoder_steps": 4, "diffusion_steps": 3, "val_every": 100, "log_every": 1,
             "warmup": 2, "threads": 1, "scale_batches": 1}
    cfg = {"seed": 3, "data": {"train": DATA, "val": DATA, "cache_dir": str(tmp_path / "cache"), "crop_length": 24,
                               "max_frames": 1, "augment": {"probability": 1.0, "tangential": 0.3}},
           "model": model, "train": train, "inference": {"steps": 3}}
    result = Trainer(cfg, str(tmp_path / "run"), max_steps=2, progress=False).run()
    assert result["steps"]["autoencoder"] == 2
    with open(tmp_path / "run" / "config.json", encoding="utf-8") as fh:
        assert json.load(fh)["data"]["augment"]["tangential"] == 0.3
    with open(tmp_path / "run" / "log.jsonl", encoding="utf-8") as fh:
        losses = [json.loads(line)["loss"] for line in fh if '"loss"' in line]
    assert losses and all(np.isfinite(losses))
    cfg["data"]["augment"] = {"jitter": 1.0}
    with pytest.raises(LatcpbInputError, match="jitter"):
        Trainer(cfg, str(tmp_path / "bad"), max_steps=1, progress=False).run()
