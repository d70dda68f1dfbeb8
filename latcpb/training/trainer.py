"""Two-stage training (autoencoder, then latent diffusion) with checkpoints, resume, logging and optional DDP.

Outputs in ``out``: ``last.pt`` (resumable, written every ``checkpoint_every_s`` seconds and at stage ends),
``best.pt`` (best validation heavy-atom RMSD of the diffusion model's mode-seeking sample), ``log.jsonl``
(losses and validation figures), ``config.json``.
"""
from __future__ import annotations

import copy
import json
import math
import os
import random
import time

import numpy as np
import torch
import torch.distributed as dist
from torch import nn

from latcpb.errors import LatcpbInputError
from latcpb.model.latcpb_model import DEFAULT_LOSS, DEFAULT_MODEL, LatCPB, merged
from latcpb.training.checkpoint import load_checkpoint, save_checkpoint
from latcpb.training.dataset import CropSampler, load_cache, typical_angles

DEFAULT_DATA = {"train": "/work/shared/data/train", "val": "/work/shared/data/val", "cache_dir": "cache",
                "max_frames": 20, "crop_length": 64, "val_frames_per_entry": 3, "val_entries": None,
                "augment": None}  # augment: CG-like CA traces, a dict of latcpb.training.augment.augment_batch keys
DEFAULT_TRAIN = {"batch_size": 16, "autoencoder_steps": 6000, "diffusion_steps": 3000, "lr": 1e-3,
                 "diffusion_lr": 5e-4, "warmup": 200, "grad_clip": 5.0, "checkpoint_every_s": 180,
                 "val_every": 1000, "log_every": 20, "threads": 2, "scale_batches": 8}
DEFAULT_INFERENCE = {"steps": 10, "temperature": 0.0, "eta": 0.0, "sample_temperature": 1.0, "refine_steps": 0,
                     "single_mode": "prior_mean"}


def full_config(config):
    """Config dict with every section completed by defaults (unknown keys rejected)."""
    known = {"seed", "data", "model", "loss", "train", "inference", "name"}
    unknown = set(config) - known
    if unknown:
        raise LatcpbInputError(f"config: unknown sections {sorted(unknown)}; known: {sorted(known)}")
    try:
        return {"name": config.get("name", "latcpb"), "seed": int(config.get("seed", 0)),
                "data": merged(DEFAULT_DATA, config.get("data")), "model": merged(DEFAULT_MODEL, config.get("model")),
                "loss": merged(DEFAULT_LOSS, config.get("loss")), "train": merged(DEFAULT_TRAIN, config.get("train")),
                "inference": merged(DEFAULT_INFERENCE, config.get("inference"))}
    except ValueError as exc:
        raise LatcpbInputError(f"config: {exc}") from None


def read_config(path):
    try:
        with open(path, encoding="utf-8") as fh:
            return full_config(json.load(fh))
    except (OSError, json.JSONDecodeError) as exc:
        raise LatcpbInputError(f"{path}: cannot read config ({exc})") from None


class _StageModule(nn.Module):
    """forward(stage, ...) dispatches to the model's stage loss so DDP can wrap it."""

    def __init__(self, model, weights):
        super().__init__()
        self.model = model
        self.weights = weights

    def forward(self, stage, xyz, present, mask, lt, segment):
        if stage == "autoencoder":
            return self.model.autoencoder_loss(xyz, present, mask, lt, segment, self.weights)
        loss = self.model.diffusion_loss(xyz, present, mask, lt, segment)
        return loss, {"loss": loss.detach()}


def _lr_factor(step, total, warmup):
    """Linear warm-up then cosine decay to zero."""
    if step < warmup:
        return (step + 1) / warmup
    return 0.5 * (1 + math.cos(math.pi * min(1.0, (step - warmup) / max(1, total - warmup))))


class Trainer:
    """Runs both stages of one config into ``out``; ``resume`` continues from ``out/last.pt``."""

    def __init__(self, config, out, device="cpu", resume=False, max_steps=None, progress=True):
        self.config = full_config(config)
        self.out = out
        self.resume = resume
        self.max_steps = max_steps
        self.progress = progress
        self.world = int(os.environ.get("WORLD_SIZE", "1"))
        self.rank = int(os.environ.get("RANK", "0"))
        if self.world > 1 and not dist.is_initialized():
            dist.init_process_group("nccl" if str(device).startswith("cuda") else "gloo")
        if str(device).startswith("cuda") and self.world > 1:
            device = f"cuda:{int(os.environ.get('LOCAL_RANK', '0'))}"
        self.device = torch.device(device)
        self.is_main = self.rank == 0

    # --- helpers -------------------------------------------------------------------------------------------
    def _log(self, record):
        if self.is_main:
            with open(os.path.join(self.out, "log.jsonl"), "a", encoding="utf-8") as fh:
                fh.write(json.dumps(record) + "\n")

    def _barrier(self):
        if self.world > 1:
            dist.barrier()

    def _data(self):
        d = self.config["data"]
        cache = d["cache_dir"]
        tag = f"f{d['max_frames']}"
        train_cache = os.path.join(cache, f"train_{os.path.basename(os.path.normpath(d['train']))}_{tag}.pt")
        val_cache = os.path.join(cache, f"val_{os.path.basename(os.path.normpath(d['val']))}_{tag}.pt")
        if self.is_main:
            load_cache(d["train"], train_cache, d["max_frames"])
            if d["val"]:
                load_cache(d["val"], val_cache, d["max_frames"])
        self._barrier()
        train = load_cache(d["train"], train_cache, d["max_frames"])
        val = load_cache(d["val"], val_cache, d["max_frames"]) if d["val"] else []
        if d["val_entries"] is not None:
            val = val[: d["val_entries"]]
        return train, val

    def _state(self, model, opt, sampler, stage, steps, best, elapsed):
        return {"config": self.config, "model": model.state_dict(), "optimizer": opt.state_dict(),
                "optimizer_stage": stage, "sampler": sampler.state_dict(), "stage": stage, "steps": dict(steps),
                "best": best, "elapsed_s": elapsed, "torch_rng": torch.get_rng_state(),
                "python_rng": random.getstate(), "numpy_rng": np.random.get_state()}

    # --- main loop -----------------------------------------------------------------------------------------
    def run(self):
        cfg = self.config
        tc = cfg["train"]
        torch.set_num_threads(tc["threads"])
        seed = cfg["seed"] + 1000 * self.rank
        torch.manual_seed(seed)
        random.seed(seed)
        np.random.seed(seed)
        os.makedirs(self.out, exist_ok=True)
        train, val = self._data()
        model = LatCPB(cfg["model"]).to(self.device)
        sampler = CropSampler(train, cfg["data"]["crop_length"], seed=seed)
        stage, steps, best, elapsed = "autoencoder", {"autoencoder": 0, "diffusion": 0}, None, 0.0
        opt_state = None
        last = os.path.join(self.out, "last.pt")
        if self.resume and os.path.exists(last):
            state = load_checkpoint(last, map_location=self.device)
            model.load_state_dict(state["model"])
            sampler.load_state_dict(state["sampler"])
            stage, steps, best, elapsed = state["stage"], state["steps"], state["best"], state["elapsed_s"]
            if state.get("optimizer_stage") == stage:
                opt_state = state["optimizer"]
            torch.set_rng_state(state["torch_rng"])
            random.setstate(state["python_rng"])
            np.random.set_state(state["numpy_rng"])
            if self.world > 1:  # ranks draw different crops after a resume too
                sampler.rng = np.random.default_rng([seed, steps["autoencoder"] + steps["diffusion"]])
        elif self.resume:
            raise LatcpbInputError(f"{last}: nothing to resume (no checkpoint in {self.out})")
        else:
            if hasattr(model.decoder, "theta0"):   # the internal-coordinate decoder (not model.decoder_dofs)
                model.decoder.theta0.copy_(typical_angles(train).to(self.device))
            if self.is_main:
                with open(os.path.join(self.out, "config.json"), "w", encoding="utf-8") as fh:
                    json.dump(cfg, fh, indent=1)
        wrapper = _StageModule(model, cfg["loss"])
        if self.world > 1:
            wrapper = nn.parallel.DistributedDataParallel(wrapper, find_unused_parameters=True)
        t_start = time.time() - elapsed
        done_this_run = 0
        while stage != "done":
            total = tc["autoencoder_steps"] if stage == "autoencoder" else tc["diffusion_steps"]
            if stage == "diffusion" and steps["diffusion"] == 0 and opt_state is None:
                self._set_latent_scale(model, sampler)
            params = model.autoencoder_parameters() if stage == "autoencoder" else \
                list(model.diffusion.parameters())
            base_lr = tc["lr"] if stage == "autoencoder" else tc["diffusion_lr"]
            opt = torch.optim.Adam(params, lr=base_lr)
            if opt_state is not None:
                opt.load_state_dict(opt_state)
                opt_state = None
            model.train()
            bar = None
            if self.progress and self.is_main:
                from tqdm import tqdm
                bar = tqdm(total=total, initial=steps[stage], desc=stage, mininterval=5)
            last_ckpt = time.time()
            while steps[stage] < total:
                if self.max_steps is not None and steps["autoencoder"] + steps["diffusion"] >= self.max_steps:
                    break
                for group in opt.param_groups:
                    group["lr"] = base_lr * _lr_factor(steps[stage], total, tc["warmup"])
                batch = sampler.sample(tc["batch_size"])
                if cfg["data"]["augment"]:  # CG-like CA traces, seeded by seed, rank and step (resume-safe)
                    from latcpb.training.augment import augment_batch
                    g = torch.Generator().manual_seed(seed * 1_000_003 + steps["autoencoder"] + steps["diffusion"])
                    batch = augment_batch(batch, cfg["data"]["augment"], g)
                batch = batch.to(self.device)
                lt = batch.layout_tensors(self.device)
                loss, logs = wrapper(stage, batch.xyz, batch.present, batch.loss_mask, lt, batch.segment)
                opt.zero_grad(set_to_none=True)
                loss.backward()
                grad_norm = torch.nn.utils.clip_grad_norm_(params, tc["grad_clip"])
                if torch.isfinite(grad_norm):
                    opt.step()
                steps[stage] += 1
                done_this_run += 1
                if bar is not None:
                    bar.update(1)
                    bar.set_postfix(loss=f"{float(loss.detach()):.3f}")
                if steps[stage] % tc["log_every"] == 0 or steps[stage] == 1:
                    self._log({"stage": stage, "step": steps[stage], "lr": opt.param_groups[0]["lr"],
                               "grad_norm": float(grad_norm), "time_s": round(time.time() - t_start, 1),
                               **{k: round(float(v), 5) for k, v in logs.items()}})
                if steps[stage] % tc["val_every"] == 0 or steps[stage] == total:
                    best = self._validate(model, val, stage, steps, best, opt, sampler, t_start)
                    model.train()
                if time.time() - last_ckpt > tc["checkpoint_every_s"]:
                    self._checkpoint(model, opt, sampler, stage, steps, best, t_start)
                    last_ckpt = time.time()
            if bar is not None:
                bar.close()
            if steps[stage] < total:  # --max-steps reached
                self._checkpoint(model, opt, sampler, stage, steps, best, t_start)
                break
            stage = "diffusion" if stage == "autoencoder" else "done"
            self._checkpoint(model, opt, sampler, stage, steps, best, t_start)
        if self.world > 1:
            dist.barrier()
        return {"stage": stage, "steps": steps, "best": best, "elapsed_s": time.time() - t_start,
                "steps_this_run": done_this_run}

    def _checkpoint(self, model, opt, sampler, stage, steps, best, t_start):
        if self.is_main:
            save_checkpoint(os.path.join(self.out, "last.pt"),
                            self._state(model, opt, sampler, stage, steps, best, time.time() - t_start))

    @torch.no_grad()
    def _set_latent_scale(self, model, sampler):
        """diffusion.latent_scale = std of the posterior means over a few training batches (averaged over ranks)."""
        model.eval()
        scales = []
        for _ in range(self.config["train"]["scale_batches"]):
            b = sampler.sample(self.config["train"]["batch_size"]).to(self.device)
            scales.append(model.posterior_scale(b.xyz, b.present, b.layout_tensors(self.device), b.segment))
        scale = torch.stack(scales).mean(0)
        if self.world > 1:
            dist.all_reduce(scale)
            scale /= self.world
        model.diffusion.latent_scale.copy_(scale)
        model.train()

    def _validate(self, model, val, stage, steps, best, opt, sampler, t_start):
        """Validation on rank 0; during the diffusion stage the best model (heavy RMSD, mode-seeking DDIM) is saved."""
        if not self.is_main or not val:
            return best
        from latcpb.training.validation import evaluate

        ic = self.config["inference"]
        nf = self.config["data"]["val_frames_per_entry"]
        if stage == "autoencoder":
            figs = {"prior_mean": evaluate(model, val, nf, mode="prior_mean"),
                    "posterior": evaluate(model, val, nf, mode="posterior")}
        else:
            figs = {"ddim_mode": evaluate(model, val, nf, mode="ddim", steps=ic["steps"],
                                          temperature=ic["temperature"], eta=ic["eta"])}
        self._log({"stage": stage, "step": steps[stage], "val": figs, "time_s": round(time.time() - t_start, 1)})
        if stage == "diffusion":
            score = figs["ddim_mode"]["heavy"]
            if best is None or score < best["heavy"]:
                best = {"heavy": score, "step": dict(steps), "figures": figs}
                state = {"config": self.config, "model": copy.deepcopy(model.state_dict()), "steps": dict(steps),
                         "val": figs, "elapsed_s": time.time() - t_start}
                save_checkpoint(os.path.join(self.out, "best.pt"), state)
        return best
