"""Evaluate a training checkpoint on the validation set and export the shipped weights with their provenance.

``python -m latcpb.training.export runs/default/best.pt --log runs/default/log.jsonl`` writes
``latcpb/weights/latcpb.pt`` (model weights and config only, no optimizer state; plain data that
``torch.load(weights_only=True)`` reads, see ``latcpb.training.checkpoint``) and
``latcpb/weights/provenance.json`` (data, config, git commit, steps, wall time, validation figures, frames/s).
"""
from __future__ import annotations

import json
import os
import subprocess
import time

import click
import torch

from latcpb.training.checkpoint import load_checkpoint, save_checkpoint

WEIGHTS_DIR = os.path.join(os.path.dirname(os.path.dirname(os.path.abspath(__file__))), "weights")


def git_commit():
    try:
        return subprocess.run(["git", "rev-parse", "HEAD"], capture_output=True, text=True, check=True,
                              cwd=os.path.dirname(WEIGHTS_DIR)).stdout.strip()
    except (OSError, subprocess.CalledProcessError):
        return None


def throughput(generator, n_residues=100, frames=64, repeats=2, steps=None, temperature=None):
    """Frames/s of ``generator.generate`` on a helical poly-residue chain of ``n_residues`` (CPU timing)."""
    import numpy as np

    from latcpb.geometry.internal_coords import LayoutTensors, ResidueLayout

    rng = np.random.default_rng(0)
    restype = rng.integers(0, 20, n_residues)
    layout = ResidueLayout.from_chains(restype, np.zeros(n_residues, dtype=int))
    k = torch.arange(n_residues, dtype=torch.float32)
    ca = torch.stack([2.3 * torch.cos(k * 1.745), 2.3 * torch.sin(k * 1.745), 1.5 * k], -1)  # alpha helix trace
    ca = ca[None].repeat(frames, 1, 1)
    lt = LayoutTensors(layout)
    generator.generate(ca[:2], lt, steps=steps, temperature=temperature)
    best = float("inf")
    for _ in range(repeats):
        t = time.perf_counter()
        generator.generate(ca, lt, steps=steps, temperature=temperature)
        best = min(best, time.perf_counter() - t)
    return frames / best


@click.command()
@click.argument("checkpoint", type=click.Path(exists=True, dir_okay=False))
@click.option("--log", "log_path", type=click.Path(exists=True, dir_okay=False), default=None)
@click.option("--out-dir", default=WEIGHTS_DIR, show_default=True)
@click.option("--frames-per-entry", default=5, show_default=True)
@click.option("--fp16/--fp32", default=False, show_default=True)
@click.option("--threads", default=2, show_default=True)
@click.option("--extra", "extra_json", default=None, help="JSON file of extra figures to record (e.g. ablations).")
@click.option("--steps", "ddim_steps", type=int, default=None, help="Shipped default DDIM steps.")
@click.option("--refine-steps", type=int, default=None, help="Shipped default clash-relief steps.")
@click.option("--single-mode", type=click.Choice(["prior_mean", "ddim"]), default=None,
              help="Shipped mode-seeking single-sample mode.")
@click.option("--sample-mode", type=click.Choice(["ddim", "prior"]), default=None,
              help="Shipped mode of stochastic samples (--samples N, --temperature).")
def main(checkpoint, log_path, out_dir, frames_per_entry, fp16, threads, extra_json, ddim_steps, refine_steps,
         single_mode, sample_mode):
    """Evaluate CHECKPOINT on the validation set (several sampling modes) and write the shipped weights."""
    from latcpb.model.latent_generator import LatentDiffusionGenerator
    from latcpb.training.checkpoint import model_from_checkpoint
    from latcpb.training.dataset import load_cache
    from latcpb.training.validation import evaluate

    torch.set_num_threads(threads)
    state = load_checkpoint(checkpoint)
    cfg = state["config"]
    cfg["inference"].setdefault("refine_steps", 0)
    if ddim_steps is not None:
        cfg["inference"]["steps"] = ddim_steps
    if refine_steps is not None:
        cfg["inference"]["refine_steps"] = refine_steps
    cfg["inference"].setdefault("single_mode", "ddim")
    if single_mode is not None:
        cfg["inference"]["single_mode"] = single_mode
    cfg["inference"].setdefault("sample_mode", "ddim")
    if sample_mode is not None:
        cfg["inference"]["sample_mode"] = sample_mode
    model, _ = model_from_checkpoint(checkpoint)
    d = cfg["data"]
    val_cache = os.path.join(d["cache_dir"], f"val_{os.path.basename(os.path.normpath(d['val']))}_f{d['max_frames']}.pt")
    val = load_cache(d["val"], val_cache, d["max_frames"])
    ic = cfg["inference"]
    rs = ic["refine_steps"]
    figures = {
        "shipped_default": evaluate(model, val, frames_per_entry, mode=ic["single_mode"], steps=ic["steps"],
                                    temperature=0.0, refine_steps=rs),
        "ddim_mode_T0": evaluate(model, val, frames_per_entry, mode="ddim", steps=ic["steps"], temperature=0.0),
        "ddim_mode_T0_relief": evaluate(model, val, frames_per_entry, mode="ddim", steps=ic["steps"],
                                        temperature=0.0, refine_steps=rs),
        "ddim_T0_4steps": evaluate(model, val, frames_per_entry, mode="ddim", steps=4, temperature=0.0),
        "ddim_T1": evaluate(model, val, frames_per_entry, mode="ddim", steps=ic["steps"], temperature=1.0),
        "ddim_T0.5": evaluate(model, val, frames_per_entry, mode="ddim", steps=ic["steps"], temperature=0.5),
        "prior_T1_relief": evaluate(model, val, frames_per_entry, mode="prior", temperature=1.0, refine_steps=rs),
        "prior_mean": evaluate(model, val, frames_per_entry, mode="prior_mean"),
        "autoencoder_posterior": evaluate(model, val, frames_per_entry, mode="posterior"),
    }
    click.echo(json.dumps(figures, indent=1))
    gen = LatentDiffusionGenerator(model, cfg)
    fps = throughput(gen)
    cfg_fast = json.loads(json.dumps(cfg))
    cfg_fast["inference"]["refine_steps"] = 0
    fps_no_refine = throughput(LatentDiffusionGenerator(model, cfg_fast))
    fps_ddim = throughput(LatentDiffusionGenerator(model, cfg_fast), temperature=0.0)
    fps_fast = throughput(LatentDiffusionGenerator(model, cfg_fast), temperature=0.0, steps=4)
    weights = {k: (v.half() if fp16 and torch.is_floating_point(v) else v) for k, v in model.state_dict().items()}
    os.makedirs(out_dir, exist_ok=True)
    save_checkpoint(os.path.join(out_dir, "latcpb.pt"), {"config": cfg, "model": weights, "steps": state.get("steps"),
                                                         "val": figures})
    log_tail = None
    if log_path:
        with open(log_path, encoding="utf-8") as fh:
            records = [json.loads(line) for line in fh if line.strip()]
        log_tail = {"last_time_s": records[-1].get("time_s") if records else None}
    prov = {
        "weights": "latcpb.pt", "dtype": "float16" if fp16 else "float32",
        "source_checkpoint": os.path.abspath(checkpoint), "git_commit": git_commit(),
        "training_data": {"train": d["train"], "val": d["val"], "max_frames_per_entry": d["max_frames"],
                          "crop_length": d["crop_length"]},
        "config": cfg, "steps": state.get("steps"), "training_wall_time_s": state.get("elapsed_s"),
        "log": log_tail,
        "val_figures": figures,
        "val_protocol": (f"{len(val)} entries of {d['val']}, up to {frames_per_entry} evenly spaced frames each; "
                         "per-entry means averaged over entries; RMSD without superposition on interior residues "
                         "(chain ends excluded); side chain = atoms beyond CB; clashes = % residues with a heavy-atom"
                         " pair < 1.2 A to a non-adjacent residue"),
        "cpu_frames_per_s_100_residues": {"shipped_default": round(fps, 1),
                                          "single_mode_no_clash_relief": round(fps_no_refine, 1),
                                          f"ddim_{ic['steps']}_steps_no_relief": round(fps_ddim, 1),
                                          "ddim_4_steps_no_relief": round(fps_fast, 1)},
        "cpu_threads": threads, "cpu_load_average_1min": os.getloadavg()[0],
        "command": "latcpb-train latcpb/configs/default.json --out runs/default && "
                   "python -m latcpb.training.export runs/default/last.pt --log runs/default/log.jsonl "
                   f"--refine-steps {ic['refine_steps']} --single-mode {ic['single_mode']} "
                   f"--sample-mode {ic['sample_mode']}",
    }
    if extra_json:
        with open(extra_json, encoding="utf-8") as fh:
            prov["extra"] = json.load(fh)
    with open(os.path.join(out_dir, "provenance.json"), "w", encoding="utf-8") as fh:
        json.dump(prov, fh, indent=1)
    click.echo(json.dumps(prov["cpu_frames_per_s_100_residues"]))


if __name__ == "__main__":
    main()
