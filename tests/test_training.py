"""Training: data crops, loss decreases, checkpoints (atomic, resumable, corrupted -> clear error), DDP on gloo."""
import json
import os
import socket

import pytest
import torch
import torch.distributed as dist

from latcpb.errors import LatcpbInputError
from latcpb.geometry.internal_coords import LayoutTensors
from latcpb.model.latcpb_model import DEFAULT_LOSS, LatCPB
from latcpb.training.checkpoint import load_checkpoint
from latcpb.training.dataset import CROP_CONTEXT, CropSampler, crop_entry, load_cache, load_entry
from latcpb.training.trainer import Trainer, full_config

DATA = os.path.join(os.path.dirname(__file__), "data", "mini")
TINY_MODEL = {"width": 32, "latent_dim": 8, "n_codes": 8, "code_dim": 16, "cg_conv_width": 8, "aa_atom_width": 8,
              "cg_layers": 1, "decoder_layers": 1, "denoiser_layers": 1, "diffusion_steps": 50}


def tiny_config(tmp_path, **train):
    t = {"batch_size": 2, "autoencoder_steps": 4, "diffusion_steps": 3, "val_every": 4, "log_every": 1,
         "warmup": 2, "threads": 1, "scale_batches": 1}
    t.update(train)
    return {"seed": 3, "data": {"train": DATA, "val": DATA, "cache_dir": str(tmp_path / "cache"), "crop_length": 24,
                                "val_frames_per_entry": 1, "max_frames": 2},
            "model": TINY_MODEL, "train": t, "inference": {"steps": 3}}


def _entries(tmp_path):
    return load_cache(DATA, str(tmp_path / "mini.pt"), max_frames=2)


def test_cache_and_crops(tmp_path):
    entries = _entries(tmp_path)
    assert sorted(e["name"] for e in entries) == ["CLN025", "T0922"]
    t0922 = next(e for e in entries if e["name"] == "T0922")
    assert t0922["coords"].shape == (1, 74, 15, 3) and t0922["coords"].dtype == torch.float32
    # interior crop: two residues at each artificial end are masked, nothing else
    xyz, present, restype, chain, has_oxt, mask = crop_entry(t0922, 0, 10, 30)
    assert len(restype) == 30 and not has_oxt.any()
    assert mask.tolist() == [False] * CROP_CONTEXT + [True] * (30 - 2 * CROP_CONTEXT) + [False] * CROP_CONTEXT
    # crop at the real C-terminus keeps the end residues scored and OXT
    _, _, _, _, has_oxt, mask = crop_entry(t0922, 0, 44, 30)
    assert has_oxt[-1] and mask[-CROP_CONTEXT:].all() and not mask[:CROP_CONTEXT].any()
    batch = CropSampler(entries, 24, seed=0).sample(4)
    assert batch.xyz.shape[0] == batch.present.shape[0] == len(batch.layout)
    assert int(batch.segment.max()) == 3


def test_few_steps_lower_the_loss(tmp_path):
    torch.manual_seed(0)
    entries = _entries(tmp_path)
    batch = CropSampler(entries, 24, seed=1).sample(2)
    lt = LayoutTensors(batch.layout)
    model = LatCPB(TINY_MODEL)
    opt = torch.optim.Adam(model.autoencoder_parameters(), lr=3e-3)
    losses = []
    for _ in range(25):
        g = torch.Generator().manual_seed(0)
        loss, _ = model.autoencoder_loss(batch.xyz, batch.present, batch.loss_mask, lt, batch.segment, DEFAULT_LOSS,
                                         generator=g)
        opt.zero_grad()
        loss.backward()
        opt.step()
        losses.append(float(loss.detach()))
    assert losses[-1] < 0.5 * losses[0]


def test_checkpoint_round_trip_and_resume(tmp_path):
    cfg = tiny_config(tmp_path)
    out = str(tmp_path / "run")
    r1 = Trainer(cfg, out, max_steps=3, progress=False).run()
    assert r1["steps"] == {"autoencoder": 3, "diffusion": 0}
    state = load_checkpoint(os.path.join(out, "last.pt"))
    assert state["config"] == full_config(cfg) and state["steps"]["autoencoder"] == 3
    r2 = Trainer(cfg, out, resume=True, max_steps=5, progress=False).run()
    assert r2["steps"] == {"autoencoder": 4, "diffusion": 1} and r2["steps_this_run"] == 2
    r3 = Trainer(cfg, out, resume=True, progress=False).run()
    assert r3["stage"] == "done" and r3["steps"] == {"autoencoder": 4, "diffusion": 3}
    log = [json.loads(line) for line in open(os.path.join(out, "log.jsonl"))]
    assert any("val" in rec and rec["stage"] == "diffusion" for rec in log)
    assert os.path.exists(os.path.join(out, "best.pt"))
    from latcpb.model.latent_generator import LatentDiffusionGenerator
    gen = LatentDiffusionGenerator.from_checkpoint(os.path.join(out, "best.pt"))
    e = load_entry(DATA, "CLN025", 1)
    from latcpb.training.validation import entry_layout
    _, lt = entry_layout(e)
    ca = torch.as_tensor(e["coords"][:, :, 1]).repeat(2, 1, 1)
    xyz = gen.generate(ca, lt, samples=3, rng=torch.Generator().manual_seed(0))
    assert xyz.shape == (6, 10, 15, 3) and torch.isfinite(xyz).all()


def test_corrupted_checkpoint_is_a_clear_error(tmp_path):
    path = tmp_path / "broken.pt"
    path.write_bytes(b"PK\x03\x04 this is not a checkpoint")
    with pytest.raises(LatcpbInputError, match="broken.pt"):
        load_checkpoint(str(path))
    from latcpb.model.latent_generator import LatentDiffusionGenerator
    with pytest.raises(LatcpbInputError, match="broken.pt"):
        LatentDiffusionGenerator.from_checkpoint(str(path))
    torch.save({"something": 1}, tmp_path / "foreign.pt")
    with pytest.raises(LatcpbInputError, match="foreign.pt"):
        load_checkpoint(str(tmp_path / "foreign.pt"))


def test_cli_reports_bad_config_in_one_line(tmp_path):
    from click.testing import CliRunner
    from latcpb.cli.train import main
    bad = tmp_path / "bad.json"
    bad.write_text(json.dumps({"train": {"no_such_key": 1}}))
    result = CliRunner().invoke(main, [str(bad), "--out", str(tmp_path / "o")])
    assert result.exit_code == 2
    assert "no_such_key" in result.output and len(result.output.strip().splitlines()) == 1


def _free_port():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _ddp_worker(rank, world, port, cfg, out, queue):
    os.environ.update(MASTER_ADDR="127.0.0.1", MASTER_PORT=str(port), WORLD_SIZE=str(world), RANK=str(rank),
                      LOCAL_RANK=str(rank))
    result = Trainer(cfg, out, max_steps=2, progress=False).run()
    if rank == 0:
        queue.put(result["steps"])
    dist.destroy_process_group()


@pytest.mark.skipif(not dist.is_available() or not dist.is_gloo_available(), reason="needs torch.distributed gloo")
def test_ddp_two_gloo_processes(tmp_path):
    import torch.multiprocessing as mp
    cfg = tiny_config(tmp_path)
    out = str(tmp_path / "ddp")
    Trainer(cfg, str(tmp_path / "warm"), max_steps=0, progress=False).run()  # builds the data cache once
    ctx = mp.get_context("spawn")
    queue = ctx.Queue()
    mp.start_processes(_ddp_worker, args=(2, _free_port(), cfg, out, queue), nprocs=2, join=True,
                       start_method="spawn")
    assert queue.get(timeout=10) == {"autoencoder": 2, "diffusion": 0}
    state = load_checkpoint(os.path.join(out, "last.pt"))
    assert state["steps"]["autoencoder"] == 2
    assert all(torch.isfinite(v).all() for v in state["model"].values() if torch.is_floating_point(v))
