"""``latcpb-backmap``: backmap a CG structure or trajectory to all-atom, optionally relaxed with OpenMM."""
from __future__ import annotations

import importlib
import os

import click

from latcpb.backmapper import Backmapper
from latcpb.cli.common import run_reporting_errors
from latcpb.errors import LatcpbInputError
from latcpb.io.reader import load_universe
from latcpb.io.selection import DEFAULT_SELECT
from latcpb.io.trajectory_writer import AtomicWriter, check_output_path, topology_path_for


@click.command(context_settings={"help_option_names": ["-h", "--help"]})
@click.argument("cg_input", metavar="CG_TRAJ_OR_STRUCTURE")
@click.option("--top", "topology", help="CG topology (PDB, GRO, PSF, TPR ...) when CG_TRAJ is a trajectory.")
@click.option("-o", "--output", required=True, help="Output file; its extension picks the format "
              "(xtc, dcd, trr, pdb, nc, xyz, gro). Trajectories get the topology beside them (aa.xtc -> aa.pdb).")
@click.option("--select", default=DEFAULT_SELECT, show_default=True,
              help="MDAnalysis selection of the CG beads, one per residue. Only amino-acid residues are taken "
              "(like 'protein and name CA', with CHARMM/Amber/GROMACS names): ions (Ca2+ named CA), lipids and "
              "water are left out with a note; beads not named CA (Martini BB ...) are refused unless --beads-as-ca.")
@click.option("--skip-unknown", is_flag=True, help="Leave out residues of unknown name inside protein chains "
              "(default: refuse them, listing them).")
@click.option("--beads-as-ca", is_flag=True, help="Take selected beads that are not CA atoms (e.g. Martini BB "
              "backbone beads) as C-alpha positions anyway.")
@click.option("--wrap", is_flag=True, help="With a periodic box: move every output residue by the box vector its "
              "bead was wrapped by in the input (CA atoms exactly where the input had them). Default: chains wrapped "
              "across the box are made whole and the output stays whole.")
@click.option("--model", default=None, help="'latcpb' (shipped, default when present), 'geometric' or a checkpoint.")
@click.option("--samples", default=1, show_default=True, type=int,
              help="All-atom samples per CG frame. The N samples of a frame are consecutive output frames "
              "(frame 0 sample 1..N, then frame 1 ...) and share its time, step and box.")
@click.option("--steps", default=None, type=int, help="Sampler steps (model default when omitted).")
@click.option("--temperature", default=None, type=float, help="Noise scale of sampling (model default).")
@click.option("--seed", default=None, type=int, help="Random seed: the same seed gives identical output on the CPU.")
@click.option("--idealize", default="standard", show_default=True, type=click.Choice(["standard", "full", "none"]),
              help="Impose ideal geometry on the output: bond lengths, planar peptide units (cis where the CA trace "
              "is), closed aromatic and proline rings, L chirality; 'full' also planar groups and branch points; "
              "'none' keeps the generator's output.")
@click.option("--batch-size", default=32, show_default=True, type=int, help="Frames per batch.")
@click.option("--device", default="auto", show_default=True, type=click.Choice(["auto", "cpu", "cuda"]))
@click.option("--start", default=None, type=int, help="First frame (0-based); output frames keep their input times.")
@click.option("--stop", default=None, type=int, help="Stop before this frame.")
@click.option("--step", default=None, type=int, help="Frame stride (output dt = input dt * step).")
@click.option("--relax", is_flag=True, help="Minimise every frame with OpenMM (CA restrained); writes a report.")
@click.option("--hydrogens", is_flag=True, help="With --relax: keep the hydrogens OpenMM added in the output.")
@click.option("--forcefield", default="amber14", show_default=True, help="With --relax: force field.")
@click.option("--solvent", default="vacuum", show_default=True, help="With --relax: vacuum, obc or gbn2.")
@click.option("--platform", default=None, help="With --relax: OpenMM platform (CPU, CUDA, OpenCL).")
@click.option("--report", default=None, help="With --relax: report path (.json or .csv; default OUTPUT.relax.json).")
@click.option("--quiet", is_flag=True, help="No progress bar.")
@click.option("--debug", is_flag=True, help="Show tracebacks.")
def main(cg_input, topology, output, select, skip_unknown, beads_as_ca, wrap, model, samples, steps, temperature, seed,
         idealize, batch_size, device, start, stop, step, relax, hydrogens, forcefield, solvent, platform, report,
         quiet, debug):
    """Backmap CG_TRAJ_OR_STRUCTURE (with --top for a trajectory) to heavy atoms and write OUTPUT.

    Every output frame keeps the time, step and box of its input frame (XTC, TRR, NC, DCD hold times; PDB, GRO
    the box). Chains follow the topology's bonds, else chain/segment IDs and residue numbering; every chain gets
    its own chain ID and segment, and TER in PDB output.
    """

    def body():
        if hydrogens and not relax:
            raise LatcpbInputError("--hydrogens needs --relax (hydrogens are added by OpenMM)")
        check_output_path(output)
        top_path = topology_path_for(output)
        if top_path:
            check_output_path(top_path)
        relax_module = _relax_module() if relax else None
        universe = load_universe(topology, cg_input) if topology else load_universe(cg_input)
        backmapper = Backmapper(model=model, samples=samples, seed=seed, device=device, batch_size=batch_size,
                                idealize=idealize, skip_unknown=skip_unknown, beads_as_ca=beads_as_ca, wrap=wrap,
                                note=_note, steps=steps, temperature=temperature)
        writer = topology_writer = None
        relaxer = None
        reports = []
        try:
            for frame_batch in backmapper.iter_backmap(universe, select, start, stop, step, source=cg_input,
                                                       progress=not quiet):
                batch = frame_batch.universe()
                if relax_module is not None:
                    if relaxer is None:  # one OpenMM system for the whole trajectory
                        relaxer = relax_module.Relaxer(batch.atoms, forcefield=forcefield, solvent=solvent,
                                                       platform=platform, source=cg_input)
                    batch, batch_reports = relaxer.relax_universe(batch, hydrogens=hydrogens, progress=False,
                                                                  frame_offset=len(reports))
                    reports.extend(batch_reports)
                if writer is None:
                    writer = AtomicWriter(output, len(batch.atoms))
                    if top_path:  # the topology beside a trajectory: renamed into place with it, at the end
                        topology_writer = AtomicWriter(top_path, len(batch.atoms))
                        batch.trajectory[0]
                        topology_writer.write(batch.atoms)
                for _ in batch.trajectory:
                    writer.write(batch.atoms)
            writer.close()
            if topology_writer is not None:
                topology_writer.close()
        except BaseException:
            for partial in (writer, topology_writer):
                if partial is not None:
                    partial.abort()
            if writer is not None and writer.closed and os.path.exists(output):
                os.unlink(output)  # the trajectory was complete but its topology failed
            raise
        if not writer.uniform_times:
            _note(f"{output}: DCD stores times as start + k * dt only; read frame times from the input (or write"
                  " xtc, trr or nc) where frames are not evenly spaced (--samples > 1)")
        if relax_module is not None:
            relax_module.write_report(reports, report or output + ".relax.json")
        if not quiet:
            extra = f" and {top_path}" if top_path else ""
            click.echo(f"wrote {writer.n_frames} frames of {len(batch.atoms)} atoms to {output}{extra}"
                       f" (model: {backmapper.model_name})", err=True)

    run_reporting_errors("latcpb-backmap", debug, body)


def _note(text: str) -> None:
    click.echo(f"latcpb-backmap: note: {text}", err=True)


def _relax_module():
    """The OpenMM stage, imported only when --relax asks for it (latcpb itself never imports OpenMM)."""
    try:
        return importlib.import_module("latcpb_openmm")
    except ImportError as err:
        raise LatcpbInputError(f"--relax needs OpenMM: pip install 'latcpb[openmm]' ({err})") from err


if __name__ == "__main__":
    main()
