"""Shared helpers of the benchmark scripts: validation entries, CA traces, machine description."""
from __future__ import annotations

import csv
import os
import platform
import warnings
from pathlib import Path

import numpy as np

DEFAULT_DATA = Path("/work/shared/data/val")


def quiet_universe(*paths):
    """MDAnalysis Universe with its warnings (read-only offset cache, CRYST1 placeholder) silenced."""
    import MDAnalysis as mda

    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        return mda.Universe(*[str(p) for p in paths])


def entries(data_dir: Path, names=None) -> list[dict]:
    """Entries of data_dir/INDEX.tsv (name, residues, frames, pdb, xtc or None), in file order."""
    rows = []
    with open(data_dir / "INDEX.tsv", newline="", encoding="utf-8") as fh:
        for row in csv.DictReader(fh, delimiter="\t"):
            if names and row["name"] not in names:
                continue
            xtc = data_dir / f"{row['name']}.xtc"
            rows.append({"name": row["name"], "residues": int(row["residues"]), "frames": int(row["frames"]),
                         "pdb": data_dir / f"{row['name']}.pdb", "xtc": xtc if xtc.exists() else None,
                         "source": row["source"]})
    return rows


def load_reference(entry: dict, max_frames: int | None = None):
    """All-atom reference Universe of an entry, in memory, first ``max_frames`` frames."""
    from MDAnalysis.coordinates.memory import MemoryReader

    u = quiet_universe(entry["pdb"], entry["xtc"]) if entry["xtc"] else quiet_universe(entry["pdb"])
    n = len(u.trajectory) if max_frames is None else min(max_frames, len(u.trajectory))
    coords = np.stack([u.trajectory[i].positions.copy() for i in range(n)])
    u.load_new(coords, format=MemoryReader)
    return u


def ca_trace(u_ref):
    """CA-only Universe (one bead per standard residue, all frames in memory) of an all-atom Universe."""
    import MDAnalysis as mda
    from MDAnalysis.coordinates.memory import MemoryReader

    from latcpb.data.featurize import standard_residue_cas

    u_ref.trajectory[0]
    ca = standard_residue_cas(u_ref.atoms)
    coords = np.stack([ca.positions.copy() for _ in u_ref.trajectory])
    u_ca = mda.Merge(ca)
    u_ca.load_new(coords, format=MemoryReader)
    return u_ca


def machine() -> dict:
    """CPU, cores, memory, load and library versions of this machine."""
    import torch

    cpu = platform.processor() or ""
    try:
        with open("/proc/cpuinfo", encoding="utf-8") as fh:
            for line in fh:
                if line.startswith("model name"):
                    cpu = line.split(":", 1)[1].strip()
                    break
    except OSError:
        pass
    mem_gb = None
    try:
        with open("/proc/meminfo", encoding="utf-8") as fh:
            mem_gb = round(int(fh.readline().split()[1]) / 1024 ** 2, 1)
    except (OSError, ValueError, IndexError):
        pass
    info = {"cpu": cpu, "cores": os.cpu_count(), "memory_gb": mem_gb, "python": platform.python_version(),
            "torch": torch.__version__, "torch_threads": torch.get_num_threads(),
            "cuda": torch.cuda.get_device_name(0) if torch.cuda.is_available() else None}
    try:
        info["load_average_1min"] = round(os.getloadavg()[0], 2)
    except OSError:
        pass
    try:
        from importlib.metadata import version

        info["MDAnalysis"] = version("MDAnalysis")
        info["pulchra"] = version("pulchra")
    except Exception:
        pass
    return info
