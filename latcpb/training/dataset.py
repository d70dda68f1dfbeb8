"""Training data: all-atom entries read once through MDAnalysis, cached as slot coordinates, cropped into batches.

An entry is ``NAME.pdb`` (+ ``NAME.xtc``) listed in ``INDEX.tsv``. Frames are subsampled evenly (at most
``max_frames`` per entry) so that long trajectories do not dominate. The cache (``torch.save``) holds per entry:
restype [N] int64, chain_index [N] int64, has_oxt [N] bool, present [N, 15] bool, coords [F, N, 15, 3] float32 Å,
good [F, N] bool (residue bond geometry sane; damaged residues are not scored, damaged frames dropped).
"""
from __future__ import annotations

import os
import warnings
from dataclasses import dataclass

import numpy as np
import torch

from latcpb.errors import LatcpbInputError
from latcpb.geometry import residue_constants as rc
from latcpb.geometry.internal_coords import LayoutTensors, ResidueLayout

CROP_CONTEXT = 2  # residues next to an artificial crop end whose CG context was cut (loss masked)
BOND_TOLERANCE = 0.35  # Å: a reference bond further than this from Engh & Huber marks the residue as damaged
MAX_BAD_RESIDUES = 0.05  # frames with more damaged residues than this share are dropped
CACHE_VERSION = 4  # 4: symmetric side-chain atoms in canonical naming


def read_index(folder):
    """Entry names of a data folder, from INDEX.tsv (first column) or, without one, the PDB files."""
    index = os.path.join(folder, "INDEX.tsv")
    if os.path.exists(index):
        with open(index, encoding="utf-8") as fh:
            rows = [line.split("\t")[0] for line in fh.read().splitlines()[1:] if line.strip()]
        return rows
    return sorted(f[:-4] for f in os.listdir(folder) if f.endswith(".pdb"))


def load_entry(folder, name, max_frames=20):
    """One entry as a dict of numpy arrays (see module docstring); frames evenly spaced over the trajectory."""
    import MDAnalysis as mda

    from latcpb.data.featurize import map_allatom

    pdb = os.path.join(folder, name + ".pdb")
    xtc = os.path.join(folder, name + ".xtc")
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        u = mda.Universe(pdb, xtc) if os.path.exists(xtc) else mda.Universe(pdb)
    mapping = map_allatom(u.atoms, source=pdb)
    layout = mapping.topology.layout
    n_frames = len(u.trajectory)
    frames = np.unique(np.linspace(0, n_frames - 1, min(max_frames, n_frames)).round().astype(int))
    coords = np.stack([mapping.slots(u.trajectory[int(f)].positions.astype(np.float32)) for f in frames])
    present = mapping.present & layout.atom_mask
    good = residue_quality(coords, present, layout)
    keep = good.mean(-1) >= 1.0 - MAX_BAD_RESIDUES
    if not keep.any():
        raise LatcpbInputError(f"{pdb}: no frame with sane bond geometry")
    return {
        "name": name,
        "restype": layout.restype.astype(np.int64),
        "chain_index": layout.chain_index.astype(np.int64),
        "has_oxt": layout.has_oxt.astype(bool),
        "present": present,
        "coords": coords[keep].astype(np.float32),
        "good": good[keep],
    }


def residue_quality(coords, present, layout, tolerance=BOND_TOLERANCE):
    """[F, N] bool: residues whose bonds (to the bonded parent, and the peptide bond to the next residue) are within
    ``tolerance`` Å of Engh & Huber. Catches damaged models (e.g. flattened or missing coordinates)."""
    from latcpb.geometry.internal_coords import cartesian_to_internal

    lt = LayoutTensors(layout)
    x = torch.from_numpy(np.asarray(coords, dtype=np.float64))
    p = torch.from_numpy(present)
    d, _, _ = cartesian_to_internal(x, lt)
    parents_ok = torch.gather(p[:, None, :].expand(-1, rc.ATOMS_PER_RESIDUE, -1), 2, lt.parents[..., 2:3])[..., 0]
    parents_ok[:, [0, 2]] = True  # N and C: bonded to CA
    check = p & parents_ok
    check[:, 1] = False
    bad = (((d - lt.bond_lengths).abs() > tolerance) & check).any(-1)
    n = len(layout)
    idx = torch.arange(n)
    last = torch.from_numpy(np.asarray(layout.c_ref_a)) == idx - 1
    nxt = (idx + 1).clamp(max=n - 1)
    pep = (x[:, :, 2] - x[:, nxt, 0]).norm(dim=-1)
    pep_bad = ((pep - 1.33).abs() > 0.5) & ~last & p[:, 2] & p[nxt, 0]
    bad = bad | pep_bad
    bad[:, 1:] |= pep_bad[:, :-1]
    return (~bad).numpy()


def build_cache(folder, path, max_frames=20, progress=True):
    """Read every entry of ``folder`` and save the list of entries to ``path`` (temp file, then rename)."""
    names = read_index(folder)
    entries = []
    iterator = names
    if progress:
        from tqdm import tqdm
        iterator = tqdm(names, desc=f"caching {os.path.basename(folder.rstrip('/'))}")
    skipped = []
    for name in iterator:
        try:
            e = load_entry(folder, name, max_frames)
        except LatcpbInputError as exc:  # e.g. a one-residue chain: not representable in the layout
            skipped.append(f"{name}: {exc}")
            continue
        entries.append({k: (torch.from_numpy(v) if isinstance(v, np.ndarray) else v) for k, v in e.items()})
    os.makedirs(os.path.dirname(os.path.abspath(path)), exist_ok=True)
    tmp = path + ".tmp"
    torch.save({"folder": os.path.abspath(folder), "max_frames": max_frames, "version": CACHE_VERSION, "entries": entries,
                "skipped": skipped}, tmp)
    os.replace(tmp, path)
    return entries


def load_cache(folder, path, max_frames=20):
    """Entries of ``folder``: from the cache at ``path`` when it exists and matches, else built and saved."""
    if os.path.exists(path):
        try:
            data = torch.load(path, weights_only=False)
        except Exception as exc:  # noqa: BLE001 - any unreadable cache is an input error naming the file
            raise LatcpbInputError(f"{path}: unreadable data cache ({type(exc).__name__}); delete it to rebuild")
        if (data.get("folder") == os.path.abspath(folder) and data.get("max_frames") == max_frames
                and data.get("version") == CACHE_VERSION):
            return data["entries"]
    return build_cache(folder, path, max_frames)


@dataclass
class Batch:
    """Crops packed into one system of R residues (chains of different crops never touch).

    xyz [R, 15, 3] Å target; present [R, 15] bool; loss_mask [R] bool (residues scored);
    segment [R] int64 crop index; layout: ResidueLayout of the packed system.
    """

    xyz: torch.Tensor
    present: torch.Tensor
    loss_mask: torch.Tensor
    segment: torch.Tensor
    layout: ResidueLayout

    @property
    def ca(self):
        return self.xyz[:, 1]  # [R, 3] Å

    def to(self, device):
        return Batch(self.xyz.to(device), self.present.to(device), self.loss_mask.to(device),
                     self.segment.to(device), self.layout)

    def layout_tensors(self, device=None):
        return LayoutTensors(self.layout, device)


def crop_entry(entry, frame, start, length):
    """Residues [start, start+length) of one frame, with chains of one residue at the crop ends dropped.

    Returns (xyz [L, 15, 3], present [L, 15], restype [L], chain [L], has_oxt [L], loss_mask [L]) numpy.
    """
    n = len(entry["restype"])
    stop = min(n, start + length)
    chain = entry["chain_index"][start:stop].numpy() if torch.is_tensor(entry["chain_index"]) else \
        entry["chain_index"][start:stop]
    sl = slice(start, stop)
    xyz = np.asarray(entry["coords"][frame, sl])
    present = np.asarray(entry["present"][sl])
    restype = np.asarray(entry["restype"][sl])
    has_oxt = np.asarray(entry["has_oxt"][sl])
    good = np.asarray(entry["good"][frame, sl]) if "good" in entry else np.ones(stop - start, dtype=bool)
    full_chain = np.asarray(entry["chain_index"])
    idx = np.arange(start, stop)
    # real chain boundaries of the full entry
    real_first = np.ones(len(idx), dtype=bool)
    real_last = np.ones(len(idx), dtype=bool)
    real_first &= (idx == 0) | (full_chain[np.maximum(idx - 1, 0)] != full_chain[idx])
    real_last &= (idx == n - 1) | (full_chain[np.minimum(idx + 1, n - 1)] != full_chain[idx])
    # distance (in residues) to an artificial cut: a crop end that is not a real chain end
    loss_mask = good.copy()
    same_chain_as_start = chain == chain[0]
    if start > 0 and not real_first[0]:
        pos = np.arange(len(idx))
        loss_mask &= ~(same_chain_as_start & (pos < CROP_CONTEXT))
    same_chain_as_end = chain == chain[-1]
    if stop < n and not real_last[-1]:
        pos = len(idx) - 1 - np.arange(len(idx))
        loss_mask &= ~(same_chain_as_end & (pos < CROP_CONTEXT))
    keep = np.ones(len(idx), dtype=bool)
    _, inv, counts = np.unique(chain, return_inverse=True, return_counts=True)
    keep &= counts[inv] >= 2
    return xyz[keep], present[keep], restype[keep], chain[keep], has_oxt[keep], loss_mask[keep]


class CropSampler:
    """Random crops of random frames: entry chosen with probability ~ sqrt(residues x frames)."""

    def __init__(self, entries, crop_length=64, seed=0):
        self.entries = [e for e in entries if len(e["restype"]) >= 2]
        self.crop_length = crop_length
        weight = np.array([np.sqrt(len(e["restype"]) * e["coords"].shape[0]) for e in self.entries], dtype=float)
        self.p = weight / weight.sum()
        self.rng = np.random.default_rng(seed)

    def state_dict(self):
        return {"rng": self.rng.bit_generator.state}

    def load_state_dict(self, state):
        self.rng.bit_generator.state = state["rng"]

    def sample(self, batch_size):
        crops = []
        while len(crops) < batch_size:
            e = self.entries[self.rng.choice(len(self.entries), p=self.p)]
            n = len(e["restype"])
            frame = int(self.rng.integers(e["coords"].shape[0]))
            start = int(self.rng.integers(0, max(1, n - self.crop_length + 1)))
            crop = crop_entry(e, frame, start, self.crop_length)
            if len(crop[2]) >= 2:
                crops.append(crop)
        return pack_crops(crops)


def pack_crops(crops):
    """Concatenate crops into one ``Batch`` (chain labels made distinct per crop)."""
    xyz, present, restype, chain, has_oxt, mask, segment = [], [], [], [], [], [], []
    offset = 0
    for k, (x, p, r, c, o, m) in enumerate(crops):
        _, c = np.unique(c, return_inverse=True)
        xyz.append(x)
        present.append(p)
        restype.append(r)
        chain.append(c + offset)
        offset += int(c.max()) + 1
        has_oxt.append(o)
        mask.append(m)
        segment.append(np.full(len(r), k))
    layout = ResidueLayout.from_chains(np.concatenate(restype), np.concatenate(chain), np.concatenate(has_oxt))
    present = np.concatenate(present) & layout.atom_mask
    return Batch(torch.from_numpy(np.concatenate(xyz)).float(), torch.from_numpy(present),
                 torch.from_numpy(np.concatenate(mask)), torch.from_numpy(np.concatenate(segment)).long(), layout)


def whole_frames(entry, frames=None):
    """Full frames of one entry as a ``Batch`` (one segment per frame), e.g. for validation."""
    frames = range(entry["coords"].shape[0]) if frames is None else frames
    n = len(entry["restype"])
    crops = [crop_entry(entry, f, 0, n) for f in frames]
    return pack_crops(crops)


def typical_angles(entries, max_frames=4):
    """Mean bond angle (circular) per residue type and slot [20, 15] rad from the data (pi*2/3 where unseen)."""
    from latcpb.geometry.internal_coords import cartesian_to_internal

    sums = torch.zeros(rc.N_RESTYPES, rc.ATOMS_PER_RESIDUE, 2, dtype=torch.float64)
    for e in entries:
        if len(e["restype"]) < 2:
            continue
        layout = ResidueLayout.from_chains(np.asarray(e["restype"]), np.asarray(e["chain_index"]),
                                           np.asarray(e["has_oxt"]))
        lt = LayoutTensors(layout)
        xyz = e["coords"][:max_frames].double()
        _, theta, _ = cartesian_to_internal(xyz, lt)
        ok = (e["present"] & e["present"][:, [0, 1, 2]].all(-1, keepdim=True))[None].expand_as(theta)
        r = lt.restype[None, :, None].expand_as(theta)
        s = torch.arange(rc.ATOMS_PER_RESIDUE)[None, None].expand_as(theta)
        flat = (r * rc.ATOMS_PER_RESIDUE + s)[ok]
        vals = torch.stack([torch.cos(theta[ok]), torch.sin(theta[ok])], -1)
        sums.view(-1, 2).index_add_(0, flat, vals)
    ang = torch.atan2(sums[..., 1], sums[..., 0])
    unseen = sums.norm(dim=-1) < 1e-9
    ang[unseen] = 2 * np.pi / 3
    return ang.float()
