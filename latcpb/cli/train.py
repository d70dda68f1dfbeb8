"""`latcpb-train CONFIG.json`: train the autoencoder, then the latent diffusion model; resumable; DDP via torchrun."""
from __future__ import annotations

import json
import os
import sys

import click

from latcpb.errors import LatcpbInputError


@click.command()
@click.argument("config", type=click.Path(dir_okay=False))
@click.option("--resume", is_flag=True, help="Continue from OUT/last.pt.")
@click.option("--device", default="cpu", show_default=True, help="cpu, cuda or cuda:N.")
@click.option("--out", default="runs/latcpb", show_default=True, type=click.Path(file_okay=False),
              help="Folder for checkpoints (last.pt, best.pt) and log.jsonl.")
@click.option("--max-steps", type=int, default=None, help="Stop (with a checkpoint) after this many steps in all.")
@click.option("--quiet", is_flag=True, help="No progress bar.")
def main(config, resume, device, out, max_steps, quiet):
    """Train LatCPB from a JSON config (sections data, model, loss, train, inference; see docs/model.md).

    Multi-process: `torchrun --nproc_per_node=K -m latcpb.cli.train CONFIG.json` (gloo on CPU, NCCL on CUDA).
    """
    from latcpb.training.trainer import Trainer, read_config

    try:
        cfg = read_config(config)
        result = Trainer(cfg, out, device=device, resume=resume, max_steps=max_steps, progress=not quiet).run()
    except LatcpbInputError as exc:
        click.echo(f"latcpb-train: error: {exc}", err=True)
        sys.exit(2)
    if os.environ.get("RANK", "0") == "0":
        click.echo(json.dumps({k: v for k, v in result.items() if k != "best"}))


if __name__ == "__main__":
    main()
