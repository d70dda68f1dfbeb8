"""MD survival of backmapped structures (DESIGN.md "Metrics", MD survival): can a default backmap be simulated?

    python bench/md_stability.py                                  # every val entry, 5,000 steps (10 ps at 2 fs)
    python bench/md_stability.py --entries T0922 2JOF --steps 500 --json /tmp/md.json

For every entry of DATA/INDEX.tsv: the CA trace of its first frame -> ``latcpb.backmap_universe`` (defaults, or
``--model``) -> ``latcpb_openmm.make_simulation`` (its defaults: amber14 + OBC implicit solvent, hydrogens added,
Langevin 300 K, 2 fs, H-bond constraints) -> ``minimizeEnergy()`` -> ``--steps`` steps, in ``--chunks`` pieces; once
straight ("raw") and once after ``latcpb_openmm.relax_universe`` ("relaxed"); ``--variants reference`` runs the
entry's own all-atom first frame through the same protocol, a control for what the protein itself does in it (a
flexible chain end can move 10 Å in 10 ps whatever its start). A run fails on an exception, a
non-finite energy (checked after minimisation and after each chunk) or a CA moving more than ``--max-ca-shift``
(10 Å) from its input bead after the CA atoms are superposed on the beads (Kabsch): an implicit-solvent Langevin
run at 1/ps friction lets the whole protein drift and turn by several Å in 10 ps, which is not a failure (the
shift without superposition is reported too). Prints a table, writes JSON (``--json``, default
bench/MD_STABILITY.json). OpenMM's CPU platform uses ``OPENMM_CPU_THREADS`` threads (set to 1 unless given).
"""
from __future__ import annotations

import argparse
import json
import math
import os
import shlex
import sys
import time
import traceback
import warnings
from datetime import datetime, timezone
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent))
from common import DEFAULT_DATA, ca_trace, entries, load_reference, machine  # noqa: E402

VARIANTS = ("raw", "relaxed", "reference")
DEFAULT_VARIANTS = ("raw", "relaxed")


def _energy_kj(simulation) -> float:
    from openmm import unit

    state = simulation.context.getState(getEnergy=True)
    return float(state.getPotentialEnergy().value_in_unit(unit.kilojoule_per_mole))


def _ca_positions(simulation, ca_index: np.ndarray) -> np.ndarray:
    from openmm import unit

    pos = simulation.context.getState(getPositions=True).getPositions(asNumpy=True)
    return np.asarray(pos.value_in_unit(unit.angstrom))[ca_index]


def _superposed_shift(xyz: np.ndarray, beads: np.ndarray) -> np.ndarray:
    """Per-CA distance [N] Å from its bead after optimal rigid superposition of xyz [N, 3] on beads [N, 3]."""
    p, q = xyz - xyz.mean(0), beads - beads.mean(0)
    u, _, vt = np.linalg.svd(p.T @ q)
    d = np.sign(np.linalg.det(u @ vt)) or 1.0
    rot = u @ np.diag([1.0, 1.0, d]) @ vt
    return np.linalg.norm(p @ rot - q, axis=-1)


def simulate(universe, beads: np.ndarray, steps: int, chunks: int, max_ca_shift: float, seed: int,
             platform: str | None) -> dict:
    """make_simulation -> minimizeEnergy -> steps; returns the run record (never raises)."""
    import latcpb_openmm

    rec = {"ok": False, "failure": None, "minimized_energy_kj_mol": None, "final_energy_kj_mol": None,
           "max_ca_shift_A": None, "max_ca_shift_unsuperposed_A": None, "worst_ca_index": None, "steps_done": 0,
           "seconds": None}
    t0 = time.perf_counter()
    try:
        sim = latcpb_openmm.make_simulation(universe, seed=seed, platform=platform)
        ca_index = np.array([a.index for a in sim.topology.atoms() if a.name == "CA"])
        if len(ca_index) != len(beads):
            raise RuntimeError(f"{len(ca_index)} CA atoms in the simulation for {len(beads)} beads")
        sim.minimizeEnergy()
        energy = _energy_kj(sim)
        rec["minimized_energy_kj_mol"] = energy if math.isfinite(energy) else None
        if not math.isfinite(energy):
            rec["failure"] = "non-finite energy after minimisation"
            return rec
        per_chunk = [steps // chunks + (1 if k < steps % chunks else 0) for k in range(chunks)]
        shift, raw_shift = 0.0, 0.0
        for n in per_chunk:
            if n == 0:
                continue
            try:
                sim.step(n)
            except Exception as exc:
                if "NaN" not in str(exc):
                    raise
                rec["failure"] = f"NaN coordinates in steps {rec['steps_done'] + 1}-{rec['steps_done'] + n}"
                return rec
            rec["steps_done"] += n
            energy = _energy_kj(sim)
            ca = _ca_positions(sim, ca_index)
            if not np.isfinite(ca).all():
                rec["failure"] = f"non-finite coordinates after {rec['steps_done']} steps"
                return rec
            per_ca = _superposed_shift(ca, beads)
            if per_ca.max() > shift:
                shift, rec["worst_ca_index"] = float(per_ca.max()), int(per_ca.argmax())
            raw_shift = max(raw_shift, float(np.linalg.norm(ca - beads, axis=-1).max()))
            rec["max_ca_shift_A"], rec["max_ca_shift_unsuperposed_A"] = shift, raw_shift
            if not math.isfinite(energy):
                rec["failure"] = f"non-finite energy after {rec['steps_done']} steps"
                return rec
            if shift > max_ca_shift:
                rec["failure"] = (f"a CA moved {shift:.1f} Å (> {max_ca_shift:g}, superposed) by step "
                                  f"{rec['steps_done']}")
                return rec
        rec["final_energy_kj_mol"] = energy
        rec["ok"] = True
    except Exception as exc:  # any failure of the run is the result
        rec["failure"] = f"{type(exc).__name__}: {' '.join(str(exc).split())[:300]}"
        rec["traceback"] = traceback.format_exc(limit=3)
    finally:
        rec["seconds"] = time.perf_counter() - t0
    return rec


def run_entry(entry: dict, args) -> dict:
    """Backmap the first frame of an entry and simulate it raw and relaxed."""
    import latcpb
    import latcpb_openmm

    out = {"entry": entry["name"], "residues": entry["residues"]}
    u_ref = load_reference(entry, 1)
    u_ca = ca_trace(u_ref)
    beads = u_ca.atoms.positions.astype(np.float64).copy()
    t = time.perf_counter()
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        u_gen = latcpb.backmap_universe(u_ca, model=args.model)
    out["backmap_seconds"] = time.perf_counter() - t
    from latcpb.metrics.validity import structure_validity

    v = structure_validity(u_gen, entry["name"])[0]
    out["validity"] = {k: v[k] for k in ("angle_outlier_residue_pct", "overlap_per_1000_atoms",
                                         "overlap_residue_pct", "max_overlap")}
    for variant in args.variants:
        universe = u_ref if variant == "reference" else u_gen
        if variant == "relaxed":
            t = time.perf_counter()
            try:
                with warnings.catch_warnings():
                    warnings.simplefilter("ignore")
                    universe, _ = latcpb_openmm.relax_universe(u_gen, progress=False, platform=args.platform)
            except Exception as exc:
                out[variant] = {"ok": False, "failure": f"relax_universe: {type(exc).__name__}: "
                                f"{' '.join(str(exc).split())[:300]}", "seconds": time.perf_counter() - t}
                continue
            relax_s = time.perf_counter() - t
        rec = simulate(universe, beads, args.steps, args.chunks, args.max_ca_shift, args.seed, args.platform)
        if variant == "relaxed":
            rec["relax_seconds"] = relax_s
        out[variant] = rec
        status = "ok" if rec["ok"] else f"FAIL ({rec['failure']})"
        print(f"  {entry['name']:<12} {variant:<8} {status}  E_min {_fmt(rec['minimized_energy_kj_mol'], '.0f')} "
              f"kJ/mol  max CA shift {_fmt(rec['max_ca_shift_A'], '.2f')} Å  {rec['seconds']:.1f} s", flush=True)
    return out


def _fmt(v, spec):
    return "–" if v is None else format(v, spec)


def table(rows, variants) -> str:
    """Text/markdown table of the run records."""
    head = "| entry | residues | angle outl. % | overlaps /1000 | " + " | ".join(
        f"{v}: result | {v}: E_min (kJ/mol) | {v}: max CA shift, superposed / not (Å) | {v}: s"
        for v in variants) + " |"
    lines = [head, "|---|---|---|---|" + "---|---|---|---|" * len(variants)]
    for r in rows:
        cells = [r["entry"], str(r["residues"]), _fmt(r["validity"]["angle_outlier_residue_pct"], ".1f"),
                 _fmt(r["validity"]["overlap_per_1000_atoms"], ".1f")]
        for v in variants:
            rec = r.get(v, {})
            cells += ["pass" if rec.get("ok") else f"FAIL: {rec.get('failure')}",
                      _fmt(rec.get("minimized_energy_kj_mol"), ".0f"),
                      f"{_fmt(rec.get('max_ca_shift_A'), '.2f')} / "
                      f"{_fmt(rec.get('max_ca_shift_unsuperposed_A'), '.2f')}",
                      _fmt(rec.get("seconds"), ".0f")]
        lines.append("| " + " | ".join(cells) + " |")
    return "\n".join(lines)


def _commit():
    """Git commit of the working tree (with '+changes' when it has uncommitted changes), or None."""
    import subprocess

    root = Path(__file__).resolve().parent.parent
    try:
        head = subprocess.run(["git", "-C", str(root), "rev-parse", "--short", "HEAD"], capture_output=True,
                              text=True, check=True).stdout.strip()
        dirty = subprocess.run(["git", "-C", str(root), "status", "--porcelain", "--untracked-files=no"],
                               capture_output=True, text=True, check=True).stdout.strip()
    except (OSError, subprocess.CalledProcessError):
        return None
    return head + ("+changes" if dirty else "")


def main(argv=None):
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--data", type=Path, default=DEFAULT_DATA)
    p.add_argument("--entries", nargs="*", help="only these entries (names of INDEX.tsv)")
    p.add_argument("--steps", type=int, default=5000, help="MD steps after minimisation (2 fs each)")
    p.add_argument("--chunks", type=int, default=10, help="energy and CA checks this many times along the run")
    p.add_argument("--model", default=None, help="checkpoint path (default: the shipped model)")
    p.add_argument("--variants", nargs="*", default=list(DEFAULT_VARIANTS), choices=VARIANTS,
                   help="raw, relaxed: the backmap; reference: the entry's own all-atom first frame, the control")
    p.add_argument("--max-ca-shift", type=float, default=10.0, help="Å")
    p.add_argument("--seed", type=int, default=1, help="velocities and Langevin noise (non-zero: OpenMM draws on 0)")
    p.add_argument("--platform", default=None, help="OpenMM platform (default: the fastest)")
    p.add_argument("--json", type=Path, default=Path(__file__).resolve().parent / "MD_STABILITY.json")
    args = p.parse_args(argv)
    os.environ.setdefault("OPENMM_CPU_THREADS", "1")
    import torch

    torch.set_num_threads(1)
    rows = []
    for entry in entries(args.data, args.entries):
        print(f"{entry['name']} ({entry['residues']} residues):", flush=True)
        rows.append(run_entry(entry, args))
    passed = {v: sum(bool(r.get(v, {}).get("ok")) for r in rows) for v in args.variants}
    summary = {v: f"{passed[v]}/{len(rows)} pass" for v in args.variants}
    print()
    print(table(rows, args.variants))
    print("\n" + ", ".join(f"{v}: {s}" for v, s in summary.items()))
    result = {"date": datetime.now(timezone.utc).strftime("%Y-%m-%d %H:%M UTC"),
              "command": "python " + " ".join(shlex.quote(a) for a in sys.argv), "machine": machine(),
              "commit": _commit(), "model": args.model or "default (shipped weights)", "steps": args.steps,
              "timestep_fs": 2.0, "max_ca_shift_A": args.max_ca_shift,
              "ca_shift": "after superposing the CAs on the beads", "summary": summary, "entries": rows}
    tmp = args.json.with_suffix(".json.tmp")
    tmp.write_text(json.dumps(result, indent=1))
    os.replace(tmp, args.json)
    print(f"wrote {args.json}")
    return 0 if all(passed[v] == len(rows) for v in args.variants) else 1


if __name__ == "__main__":
    sys.exit(main())
