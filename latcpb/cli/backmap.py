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
@click.argument("cg_inputs", nargs=-1, metavar="CG_TRAJ_OR_STRUCTURE...")
@click.option("--top", "topology", help="CG topology (PDB, GRO, PSF, TPR ...) when CG_TRAJ is a trajectory.")
@click.option("-o", "--output", default=None, help="Output file (one input); its extension picks the format "
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
@click.option("--keep-beads", is_flag=True, help="Keep the beads exactly as the output's CA atoms. Default: a CA"
              " trace that no chain of ideal peptide units can follow (CG bead spacing, straight segments, beads too"
              " close) is moved as little as needed first (atomistic traces stay exact); a note gives the move.")
@click.option("--model", default=None, help="'latcpb' (shipped, default when present), 'geometric' or a checkpoint.")
@click.option("--samples", default=1, show_default=True, type=int,
              help="All-atom samples per CG frame. The N samples of a frame are consecutive output frames "
              "(frame 0 sample 1..N, then frame 1 ...) and share its time, step and box.")
@click.option("--steps", default=None, type=int, help="Sampler steps (model default when omitted).")
@click.option("--temperature", default=None, type=float, help="Noise scale of sampling (model default).")
@click.option("--relief-steps", default=None, type=int,
              help="Clash-relief steps on the built structure (model default, 80 + 20 after a rotamer rescue, when "
              "omitted). 0 = none: about 5x faster at 100 residues, with far more atom overlaps (val: 162 against 6 "
              "per 1000 atoms); bonds, angles and rings stay ideal either way.")
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
@click.option("-O", "--output-dir", default=None, help="Folder for one output per input, named after it (a.xtc ->"
              " OUTDIR/a.xtc and OUTDIR/a.pdb); several inputs need it.")
@click.option("--manifest", default=None, help="File of inputs, one 'INPUT [TOPOLOGY]' per line (paths relative to"
              " the file; without TOPOLOGY: --top), written to -O OUTDIR.")
@click.option("--workers", default=None, type=int, help="Local worker processes (one thread each) sharing the frame"
              " blocks; the same seed gives the same output for any number.")
@click.option("--scheduler", default=None, help="Address of a running dask.distributed scheduler (tcp://host:8786);"
              " its workers share the frame blocks (inputs, outputs and model must be at the same paths there).")
@click.option("--block-frames", default=128, show_default=True, type=int, help="Frames per block: the unit of work"
              " of a worker, of --resume and of the random stream.")
@click.option("--resume", is_flag=True, help="Continue an interrupted run from the complete blocks in its work folder"
              " (OUTPUT.latcpb-work); refused when the folder was made with other options.")
@click.option("--work-dir", default=None, help="Folder that holds the work folders (default: beside each output).")
@click.option("--keep-work", is_flag=True, help="Keep the work folder (complete blocks) after success.")
@click.option("--fail-fast", is_flag=True, help="Several inputs: stop at the first that fails (default: report it and"
              " go on; the exit code is 2 when any failed).")
@click.option("--quiet", is_flag=True, help="No progress bar.")
@click.option("--debug", is_flag=True, help="Show tracebacks.")
def main(cg_inputs, topology, output, select, skip_unknown, beads_as_ca, wrap, keep_beads, model, samples, steps,
         temperature, relief_steps, seed, idealize, batch_size, device, start, stop, step, relax, hydrogens, forcefield,
         solvent, platform, report, output_dir, manifest, workers, scheduler, block_frames, resume, work_dir, keep_work,
         fail_fast, quiet, debug):
    """Backmap CG_TRAJ_OR_STRUCTURE (with --top for a trajectory) to heavy atoms and write OUTPUT.

    Every output frame keeps the time, step and box of its input frame (XTC, TRR, NC, DCD hold times; PDB, GRO
    the box). Chains follow the topology's bonds, else chain/segment IDs and residue numbering; every chain gets
    its own chain ID and segment, and TER in PDB output.
    """

    def body():
        if hydrogens and not relax:
            raise LatcpbInputError("--hydrogens needs --relax (hydrogens are added by OpenMM)")
        if not relax or len(cg_inputs) != 1 or any((output_dir, manifest, workers, scheduler, resume, work_dir,
                                                    keep_work)):
            return run_pipeline()  # frame blocks (latcpb.pipeline); --relax alone below, frame by frame in here
        if output is None:
            raise LatcpbInputError("no output: give -o OUTPUT")
        cg_input = cg_inputs[0]
        check_output_path(output)
        top_path = topology_path_for(output)
        if top_path:
            check_output_path(top_path)
        relax_module = _relax_module() if relax else None
        universe = load_universe(topology, cg_input) if topology else load_universe(cg_input)
        backmapper = Backmapper(model=model, samples=samples, seed=seed, device=device, batch_size=batch_size,
                                idealize=idealize, skip_unknown=skip_unknown, beads_as_ca=beads_as_ca, wrap=wrap,
                                keep_beads=keep_beads, note=_note, steps=steps, temperature=temperature,
                                relief_steps=relief_steps)
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
            from latcpb.pipeline.relax_stage import relax_note

            damage = relax_note(reports, relax_module.write_report(reports, report or output + ".relax.json"))
            if damage:
                _note(damage)
        if not quiet:
            extra = f" and {top_path}" if top_path else ""
            click.echo(f"wrote {writer.n_frames} frames of {len(batch.atoms)} atoms to {output}{extra}"
                       f" (model: {backmapper.model_name})", err=True)

    def run_pipeline():
        from latcpb.pipeline.jobs import run_cli

        relax_options = dict(forcefield=forcefield, solvent=solvent, platform=platform,
                             hydrogens=hydrogens) if relax else None
        run_cli(cg_inputs, topology=topology, output=output, output_dir=output_dir, manifest=manifest,
                workers=workers, scheduler=scheduler, fail_fast=fail_fast, quiet=quiet,
                echo=lambda text: click.echo(text, err=True), note=_note, relax=relax_options, report=report,
                select=select, start=start, stop=stop, step=step, seed=seed, block_frames=block_frames,
                resume=resume, work_dir=work_dir, keep_work=keep_work, model=model, samples=samples,
                device=device, batch_size=batch_size, idealize=idealize, skip_unknown=skip_unknown,
                beads_as_ca=beads_as_ca, wrap=wrap, keep_beads=keep_beads, steps=steps, temperature=temperature,
                relief_steps=relief_steps)

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
