"""Ablations of the paper's Table 2 (full model, discrete latent off, contrastive off) at an equal training budget,
over several seeds: trains each config (skipped when its run folder already holds a finished checkpoint), scores it
on the validation set, prints a table and writes JSON.

    python bench/ablations.py --seeds 0 1 2      # trains what is missing in runs/ablations, writes bench/ABLATIONS.*

Configs: latcpb/configs/ablation_{base,no_discrete,no_contrastive}.json (500 autoencoder + 300 diffusion steps,
about 14 min each on one CPU thread). Scored per run, on up to --frames frames of every validation entry: the
default single sample (CG-prior mean + clash relief, as shipped), DDIM samples at temperature 1 and the autoencoder
reconstruction (posterior mean, needs the all-atom input), with ``latcpb.training.validation.evaluate`` (interior
residues, no superposition; means over entries). Mean and standard deviation over seeds.
"""
from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
from pathlib import Path

import numpy as np

REPO = Path(__file__).resolve().parent.parent
CONFIGS = {"full model": "ablation_base", "discrete latent off": "ablation_no_discrete",
           "contrastive off": "ablation_no_contrastive"}
MODES = {  # column -> keyword arguments of latcpb.training.validation.evaluate
    "default (prior mean + relief)": {"mode": "prior_mean", "refine_steps": 5},
    "DDIM 10 steps, T = 1": {"mode": "ddim", "steps": 10, "temperature": 1.0},
    "reconstruction (posterior)": {"mode": "posterior"},
}
FIGURES = ("heavy", "backbone", "side_chain", "clash_pct", "bond_score")


def train(config_name: str, seed: int, out: Path) -> Path:
    """Train one config with one seed into ``out`` (resumed if interrupted); returns the checkpoint path."""
    out.mkdir(parents=True, exist_ok=True)
    cfg = json.loads((REPO / "latcpb" / "configs" / f"{config_name}.json").read_text())
    cfg["seed"] = seed
    total = cfg["train"]["autoencoder_steps"] + cfg["train"]["diffusion_steps"]
    last = out / "last.pt"
    if last.exists():
        import torch

        state = torch.load(last, map_location="cpu", weights_only=False)
        if sum(state.get("steps", {}).values()) >= total:
            return last
    config_path = out / "ablation_config.json"
    config_path.write_text(json.dumps(cfg, indent=1))
    cmd = [sys.executable, "-m", "latcpb.cli.train", str(config_path), "--out", str(out), "--quiet"]
    if last.exists():
        cmd.append("--resume")
    subprocess.run(cmd, check=True, cwd=REPO, stdout=subprocess.DEVNULL)
    return last


def score(checkpoint: Path, frames: int) -> dict:
    """Validation figures of one checkpoint in every mode of ``MODES``."""
    from latcpb.training.checkpoint import model_from_checkpoint
    from latcpb.training.dataset import load_cache
    from latcpb.training.validation import evaluate

    model, state = model_from_checkpoint(str(checkpoint), map_location="cpu")
    d = state["config"]["data"]
    cache = REPO / d["cache_dir"] / f"val_{Path(d['val']).name}_f{d['max_frames']}.pt"
    val = load_cache(d["val"], str(cache), d["max_frames"])
    return {column: {k: v for k, v in evaluate(model, val, frames, **kwargs).items() if k in FIGURES}
            for column, kwargs in MODES.items()}


def table(results: dict) -> str:
    """Markdown: one row per config, one cell per mode: heavy / backbone / side chain Å, clashes % (mean ± sd)."""
    lines = ["| config (seeds) | " + " | ".join(MODES) + " |", "|---" * (len(MODES) + 1) + "|"]
    for label, runs in results.items():
        cells = []
        for column in MODES:
            cell = []
            for key in ("heavy", "backbone", "side_chain", "clash_pct"):
                values = np.array([r[column][key] for r in runs.values()])
                cell.append(f"{values.mean():.3f}" + (f" ± {values.std(ddof=1):.3f}" if len(values) > 1 else ""))
            cells.append(" / ".join(cell))
        lines.append(f"| {label} ({', '.join(runs)}) | " + " | ".join(cells) + " |")
    return "\n".join(lines)


def markdown(result: dict) -> str:
    """bench/ABLATIONS.md: how the table was made, the table (recomputed from the per-seed figures)."""
    return "\n".join([
        "# Ablations (paper Table 2 switches)", "",
        f"Made by `{result['command']}`. Each config trains 500 autoencoder + 300 diffusion steps (equal budget; "
        "`latcpb/configs/ablation_*.json`) once per seed; each run is scored on up to "
        f"{result['frames_per_entry']} frames of every validation entry by `latcpb.training.validation.evaluate` "
        "(interior residues, no superposition, means over entries, no idealisation).", "",
        "Cells: heavy / backbone / side-chain RMSD (Å) / clashing residues (%), mean ± standard deviation over "
        "seeds.",
        "", table(result["results"]), ""])


def main(argv=None):
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--seeds", type=int, nargs="+", default=[0, 1])
    p.add_argument("--out", type=Path, default=REPO / "runs" / "ablations")
    p.add_argument("--frames", type=int, default=5, help="frames per validation entry")
    p.add_argument("--json", type=Path, default=REPO / "bench" / "ABLATIONS.json")
    p.add_argument("--markdown", type=Path, default=REPO / "bench" / "ABLATIONS.md")
    p.add_argument("--table-only", action="store_true", help="rewrite --markdown from an existing --json")
    args = p.parse_args(argv)
    if args.table_only:
        args.markdown.write_text(markdown(json.loads(args.json.read_text())))
        print(f"wrote {args.markdown}")
        return
    os.environ.setdefault("OMP_NUM_THREADS", "1")
    import torch

    torch.set_num_threads(1)
    results = {}
    for label, config_name in CONFIGS.items():
        results[label] = {}
        for seed in args.seeds:
            checkpoint = train(config_name, seed, args.out / f"{config_name}_seed{seed}")
            results[label][f"seed {seed}"] = score(checkpoint, args.frames)
            print(f"{label}, seed {seed}: " + json.dumps(results[label][f"seed {seed}"]), flush=True)
    text = table(results)
    print(text)
    result = {"command": " ".join(["python", "bench/ablations.py", *(argv or sys.argv[1:])]),
              "frames_per_entry": args.frames, "results": results, "table": text}
    args.json.write_text(json.dumps(result, indent=1))
    args.markdown.write_text(markdown(result))
    print(f"wrote {args.json} and {args.markdown}")


if __name__ == "__main__":
    main()
