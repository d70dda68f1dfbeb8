"""``latcpb-eval``: score a generated all-atom structure/trajectory against a reference one.

    latcpb-eval REF_TOP GEN_TOP -o REPORT_DIR
    latcpb-eval REF_TOP REF_TRAJ GEN_TOP GEN_TRAJ -o REPORT_DIR [--samples S]
    latcpb-eval REF_TOP REF_TRAJ GEN_TOP -o REPORT_DIR      (3 files: decided by the second file's extension)

Writes REPORT_DIR/metrics.json and PNG figures (torsions, Ramachandran maps, per-residue RMSD), and prints the
validity figures (chain ends included) of the generated and the reference structures as a table, then accuracy.
"""
from __future__ import annotations

import gc
import json
import sys
import warnings
from pathlib import Path

import click

from latcpb.errors import LatcpbInputError

TRAJECTORY_FORMATS = {"xtc", "trr", "dcd", "nc", "ncdf", "netcdf", "lammpstrj", "trj", "mdcrd", "crdbox", "h5",
                      "h5md", "dtr", "inpcrd", "restrt", "xyz", "txyz", "arc", "gsd", "tng", "trz"}
TOPOLOGY_FORMATS = {"pdb", "ent", "pdbqt", "pqr", "gro", "cif", "pdbx", "mmcif", "mol2", "crd", "tpr", "psf",
                    "prmtop", "parm7", "top", "itp", "data", "xml", "pdb.gz", "gro.gz"}


def _extension(path: str) -> str:
    name = Path(path).name.lower()
    for ext in ("pdb.gz", "gro.gz"):
        if name.endswith("." + ext):
            return ext
    return name.rsplit(".", 1)[-1] if "." in name else ""


def split_inputs(paths) -> tuple[tuple[str, str | None], tuple[str, str | None]]:
    """(ref_top, ref_traj), (gen_top, gen_traj) from 2, 3 or 4 paths; 3 paths are split by the second one's
    extension (a trajectory format -> it is the reference trajectory)."""
    paths = list(paths)
    if len(paths) == 2:
        return (paths[0], None), (paths[1], None)
    if len(paths) == 4:
        return (paths[0], paths[1]), (paths[2], paths[3])
    if len(paths) == 3:
        second, third = _extension(paths[1]), _extension(paths[2])
        if second in TRAJECTORY_FORMATS and second not in TOPOLOGY_FORMATS:
            return (paths[0], paths[1]), (paths[2], None)
        if third in TRAJECTORY_FORMATS:
            return (paths[0], None), (paths[1], paths[2])
        raise LatcpbInputError(
            f"{paths[1]}: with 3 files the second must be a reference trajectory ({', '.join(sorted(TRAJECTORY_FORMATS))})"
            f" or the third a generated trajectory; got .{second} and .{third}")
    raise LatcpbInputError(f"expected 2, 3 or 4 input files (REF_TOP [REF_TRAJ] GEN_TOP [GEN_TRAJ]), got {len(paths)}")


def load_universe(topology: str, trajectory: str | None = None):
    """MDAnalysis Universe of a topology (+ trajectory); any failure -> ``LatcpbInputError`` naming the file."""
    for path in (topology, trajectory):
        if path is not None and not Path(path).is_file():
            raise LatcpbInputError(f"{path}: no such file")
    u, error = _open_universe(topology, trajectory)
    if error is not None:
        culprit = trajectory if trajectory and _open_universe(topology)[1] is None else topology
        raise LatcpbInputError(f"{culprit}: cannot be read by MDAnalysis ({error})")
    if len(u.atoms) == 0:
        raise LatcpbInputError(f"{topology}: no atoms")
    return u


def _open_universe(topology: str, trajectory: str | None = None):
    """(Universe, None) or (None, one-line error). A reader that fails half-way is released here, with the
    'Exception ignored in __del__' noise of such MDAnalysis readers (e.g. a corrupt XTC) silenced, so that it
    neither prints after our one-line message nor fires later at a random point."""
    import MDAnalysis as mda

    previous_hook = sys.unraisablehook
    sys.unraisablehook = lambda unraisable: None
    try:
        try:
            with warnings.catch_warnings():
                warnings.simplefilter("ignore")
                return (mda.Universe(topology, trajectory) if trajectory else mda.Universe(topology)), None
        except Exception as exc:  # MDAnalysis raises many types for unreadable input
            error = " ".join(str(exc).split()) or type(exc).__name__
        gc.collect()
        return None, error
    finally:
        sys.unraisablehook = previous_hook


def run_evaluation(paths, out_dir, samples=1, plots=True) -> dict:
    """Load, score, write metrics.json (+ PNGs); returns the JSON-ready result."""
    from latcpb.metrics import evaluate

    (ref_top, ref_traj), (gen_top, gen_traj) = split_inputs(paths)
    ref_u = load_universe(ref_top, ref_traj)
    gen_u = load_universe(gen_top, gen_traj)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        result = evaluate(ref_u, gen_u, samples=samples, keep_torsions=plots,
                          ref_source=ref_traj or ref_top, gen_source=gen_traj or gen_top)
    out_dir = Path(out_dir)
    try:
        out_dir.mkdir(parents=True, exist_ok=True)
    except OSError as exc:
        raise LatcpbInputError(f"{out_dir}: cannot create the report directory ({exc.strerror})") from exc
    figures = []
    if plots:
        from latcpb.metrics.report import write_plots

        figures = [p.name for p in write_plots(result, out_dir)]
        result.pop("torsions")
    result["inputs"] = {"reference_topology": ref_top, "reference_trajectory": ref_traj,
                        "generated_topology": gen_top, "generated_trajectory": gen_traj}
    result["figures"] = figures
    with open(out_dir / "metrics.json", "w", encoding="utf-8") as fh:
        json.dump(result, fh, indent=1)
    return result


def _fmt(value, spec=".3f"):
    return "n/a" if value is None else format(value, spec)


def validity_table(result: dict) -> str:
    """Text table of the validity figures (means over frames): generated vs reference."""
    from latcpb.metrics import VALIDITY_DETAIL_KEYS, VALIDITY_KEYS

    rows = [(title, _fmt(result.get(key), spec), _fmt(result.get(f"ref_{key}"), spec))
            for key, title, spec in VALIDITY_KEYS + VALIDITY_DETAIL_KEYS if key in result]
    width = max(len(t) for t, _, _ in rows)
    lines = [f"{'validity (chain ends included)':<{width}}  {'generated':>10}  {'reference':>10}"]
    lines += [f"{t:<{width}}  {g:>10}  {ref:>10}" for t, g, ref in rows]
    return "\n".join(lines)


@click.command(context_settings={"help_option_names": ["-h", "--help"]})
@click.argument("files", nargs=-1, required=True)
@click.option("-o", "--out", "out_dir", required=True, type=click.Path(file_okay=False),
              help="Report directory (metrics.json and PNG figures).")
@click.option("--samples", "-s", default=1, show_default=True, type=click.IntRange(min=1),
              help="Generated frames per reference frame (frame-major).")
@click.option("--plots/--no-plots", default=True, show_default=True, help="Write the PNG figures.")
def main(files, out_dir, samples, plots):
    """Score generated all-atom structures against references: REF_TOP [REF_TRAJ] GEN_TOP [GEN_TRAJ]."""
    try:
        r = run_evaluation(files, out_dir, samples=samples, plots=plots)
    except LatcpbInputError as exc:
        click.echo(f"latcpb-eval: error: {' '.join(str(exc).split())}", err=True)
        sys.exit(2)
    click.echo(f"{r['n_generated_frames']} generated frame(s) vs {r['n_reference_frames']} reference frame(s), "
               f"{r['n_residues']} residues, coverage {_fmt(r['coverage'])}")
    click.echo(validity_table(r))
    click.echo(f"RMSD heavy {_fmt(r['rmsd_heavy'])} Å (superposed {_fmt(r['rmsd_heavy_superposed'])}), "
               f"backbone {_fmt(r['rmsd_backbone'])}, side chain {_fmt(r['rmsd_sidechain'])}  [termini excluded]")
    click.echo(f"GED {_fmt(r['ged_signed'])} / corrected {_fmt(r['ged_corrected'])}, "
               f"clashes {_fmt(r['clash_residue_pct'], '.2f')} % residues, bond score {_fmt(r['bond_score'])}, "
               f"torsion KL {_fmt(r['torsion_kl'])}, D residues {_fmt(r['d_residues'], '.1f')}, "
               f"non-Pro cis peptides {_fmt(r['cis_peptides'], '.1f')} ({_fmt(r['cis_peptides_spurious'], '.1f')} where"
               f" the reference is trans), CA RMSD {_fmt(r['ca_rmsd'])} Å")
    click.echo(f"report: {Path(out_dir) / 'metrics.json'}")


if __name__ == "__main__":
    main()
