"""Validation figures for model selection, on slot coordinates (no file I/O): RMSD without superposition on
interior residues (heavy, backbone N/CA/C/O, side chain beyond CB), clashes, bond score, D residues, cis peptides."""
from __future__ import annotations

import math
import time

import numpy as np
import torch

from latcpb.geometry import residue_constants as rc
from latcpb.geometry.internal_coords import LayoutTensors, ResidueLayout
from latcpb.geometry.nerf import dihedral
from latcpb.model.cg_features import chain_ends

_RADII = torch.tensor([rc.COVALENT_RADII.get(e, 0.76) if e else 0.0 for e in rc.RESTYPE_ELEMENTS.reshape(-1)]
                      ).view(rc.N_RESTYPES, rc.ATOMS_PER_RESIDUE)
_PRO = rc.RESTYPE_INDEX["PRO"]
_GLY = rc.RESTYPE_INDEX["GLY"]


def structure_figures(pred, ref, present, lt):
    """Figures of one frame. pred, ref [N, 15, 3] Å; present [N, 15] bool (reference atoms). Returns dict."""
    first, last = chain_ends(lt)
    interior = ~(first | last)
    atoms = present & lt.atom_mask
    sq = ((pred - ref) ** 2).sum(-1)
    slots = torch.arange(rc.ATOMS_PER_RESIDUE)
    bb = (slots < 4)[None]
    sc = ((slots >= 5) & (slots < rc.OXT_SLOT))[None]

    def rmsd(mask):
        mask = mask & atoms & interior[:, None]
        return float(sq[mask].mean().sqrt()) if mask.any() else float("nan")

    out = {"heavy": rmsd(torch.ones_like(atoms)), "backbone": rmsd(bb.expand_as(atoms)),
           "side_chain": rmsd(sc.expand_as(atoms))}
    # clashes: residues with any heavy-atom pair < 1.2 A to a non-adjacent residue
    n = pred.shape[0]
    flat = pred[lt.atom_mask]
    res = torch.arange(n)[:, None].expand(n, rc.ATOMS_PER_RESIDUE)[lt.atom_mask]
    d = torch.cdist(flat[None], flat[None], compute_mode="donot_use_mm_for_euclid_dist")[0]
    chain = torch.cumsum(first.long(), 0)
    adjacent = ((res[:, None] - res[None, :]).abs() <= 1) & (chain[res][:, None] == chain[res][None, :])
    close = (d < 1.2) & ~adjacent
    clashing = torch.zeros(n, dtype=torch.bool)
    clashing[res[close.any(1)]] = True
    out["clash_pct"] = 100.0 * float(clashing.float().mean())
    # bond score: reference bonds (closer than 1.3 x sum of covalent radii) reproduced within 10 %
    ref_flat = ref[lt.atom_mask]
    pres_flat = present[lt.atom_mask]
    radii = _RADII[lt.restype][lt.atom_mask]
    d_ref = torch.cdist(ref_flat[None], ref_flat[None], compute_mode="donot_use_mm_for_euclid_dist")[0]
    bonded = (d_ref < 1.3 * (radii[:, None] + radii[None, :])) & pres_flat[:, None] & pres_flat[None, :]
    bonded = torch.triu(bonded, diagonal=1)
    ratio = d[bonded] / d_ref[bonded]
    out["bond_score"] = float(((ratio > 0.9) & (ratio < 1.1)).float().mean()) if bonded.any() else float("nan")
    # chirality at CA: improper N-CA-C-CB is about -123 deg for L residues; D when positive (glycine excluded)
    has_cb = lt.atom_mask[:, 4] & (lt.restype != _GLY)
    imp = dihedral(pred[:, 0], pred[:, 1], pred[:, 2], pred[:, 4])
    out["d_residues"] = int((has_cb & (imp > 0)).sum())
    # non-proline cis peptide bonds |omega| < 30 deg
    nxt = torch.arange(1, n + 1).clamp(max=n - 1)
    omega = dihedral(pred[:, 1], pred[:, 2], pred[nxt, 0], pred[nxt, 1])
    cis = (omega.abs() < math.radians(30)) & ~last & (lt.restype[nxt] != _PRO)
    out["nonpro_cis"] = int(cis.sum())
    return out


def entry_layout(entry):
    layout = ResidueLayout.from_chains(np.asarray(entry["restype"]), np.asarray(entry["chain_index"]),
                                       np.asarray(entry["has_oxt"]))
    return layout, LayoutTensors(layout)


@torch.inference_mode()
def evaluate(model, entries, frames_per_entry=5, mode="ddim", steps=10, temperature=0.0, eta=0.0, seed=0,
             max_residues=4096, refine_steps=0):
    """Mean figures over entries (each the mean over its evaluated frames) and wall time. Returns dict."""
    model.eval()
    gen = torch.Generator().manual_seed(seed)
    per_entry = []
    t0 = time.time()
    n_frames = 0
    for e in entries:
        layout, lt = entry_layout(e)
        n = len(layout)
        f_all = e["coords"].shape[0]
        frames = np.unique(np.linspace(0, f_all - 1, min(frames_per_entry, f_all)).round().astype(int))
        ref = e["coords"][frames].float()                       # [F, N, 15, 3]
        present = torch.as_tensor(e["present"])
        chunk = max(1, max_residues // n)
        preds = []
        for s in range(0, len(frames), chunk):
            r = ref[s:s + chunk]
            f = r.shape[0]
            packed = _tile(layout, f)
            seg = torch.arange(f).repeat_interleave(n)
            reference = (r.reshape(f * n, 15, 3), present.repeat(f, 1))
            xyz = model.sample_coordinates(r[:, :, 1].reshape(f * n, 3), packed, seg, mode=mode, steps=steps,
                                           temperature=temperature, eta=eta, generator=gen, reference=reference,
                                           refine_steps=refine_steps)
            preds.append(xyz.view(f, n, 15, 3))
        pred = torch.cat(preds)
        figs = [structure_figures(pred[k], ref[k], present, lt) for k in range(len(frames))]
        n_frames += len(frames)
        per_entry.append({k: float(np.nanmean([f[k] for f in figs])) for k in figs[0]})
    keys = per_entry[0].keys()
    out = {k: float(np.nanmean([p[k] for p in per_entry])) for k in keys}
    out["seconds"] = time.time() - t0
    out["frames"] = n_frames
    return out


def _tile(layout, copies):
    """LayoutTensors of ``copies`` independent copies of a layout side by side."""
    n = len(layout)
    chain = np.concatenate([layout.chain_index - layout.chain_index.min() + k * (layout.chain_index.max() + 1)
                            for k in range(copies)])
    tiled = ResidueLayout.from_chains(np.tile(layout.restype, copies), chain, np.tile(layout.has_oxt, copies))
    assert len(tiled) == n * copies
    return LayoutTensors(tiled)
