"""PNG figures of an ``evaluate(..., keep_torsions=True)`` result (matplotlib Agg canvas; pyplot is never used,
so importing this module changes no global matplotlib state)."""
from __future__ import annotations

from pathlib import Path

import numpy as np

from latcpb.metrics.torsions import N_BINS, TORSIONS

REF_COLOR, GEN_COLOR = "#1f77b4", "#d62728"


def _figure(width, height):
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure

    fig = Figure(figsize=(width, height), dpi=110)
    FigureCanvasAgg(fig)
    return fig


def _values(result: dict, which: str, name: str) -> np.ndarray:
    """Defined torsion values (degrees, flat) of 'reference' or 'generated'."""
    tors = result["torsions"]
    return tors[which][name][:, tors["masks"][name]].ravel()


def plot_torsion_distributions(result: dict, path) -> Path:
    """phi, psi, chi1, chi2 histograms (36 bins over -180..180°), reference vs generated, with KL in titles."""
    fig = _figure(10, 7.5)
    bins = np.linspace(-180, 180, N_BINS + 1)
    for k, name in enumerate(TORSIONS):
        ax = fig.add_subplot(2, 2, k + 1)
        ref, gen = _values(result, "reference", name), _values(result, "generated", name)
        if ref.size:
            ax.hist(ref, bins=bins, density=True, histtype="stepfilled", alpha=0.35, color=REF_COLOR,
                    label=f"reference (n={ref.size})")
        if gen.size:
            ax.hist(gen, bins=bins, density=True, histtype="step", lw=1.8, color=GEN_COLOR,
                    label=f"generated (n={gen.size})")
        kl = result.get(f"kl_{name}")
        ax.set_title(f"{name}" + (f"   KL(ref||gen) = {kl:.3f}" if kl is not None else ""))
        ax.set_xlim(-180, 180)
        ax.set_xticks(np.arange(-180, 181, 60))
        ax.set_xlabel("angle (°)")
        ax.set_ylabel("density (1/°)")
        ax.legend(fontsize=8, loc="upper right")
    fig.tight_layout()
    fig.savefig(path)
    return Path(path)


def plot_ramachandran(result: dict, path) -> Path:
    """Ramachandran maps (phi vs psi, residues where both are defined) of the reference and the generated set."""
    fig = _figure(10, 4.8)
    tors = result["torsions"]
    both = tors["masks"]["phi"] & tors["masks"]["psi"]
    for k, which in enumerate(("reference", "generated")):
        ax = fig.add_subplot(1, 2, k + 1)
        phi = tors[which]["phi"][:, both].ravel()
        psi = tors[which]["psi"][:, both].ravel()
        if phi.size > 2000:
            ax.hist2d(phi, psi, bins=72, range=[[-180, 180], [-180, 180]], cmap="Blues", cmin=1)
        else:
            ax.scatter(phi, psi, s=6, alpha=0.6, color=REF_COLOR if k == 0 else GEN_COLOR, linewidths=0)
        ax.set_xlim(-180, 180)
        ax.set_ylim(-180, 180)
        ax.set_xticks(np.arange(-180, 181, 60))
        ax.set_yticks(np.arange(-180, 181, 60))
        ax.axhline(0, color="0.7", lw=0.5)
        ax.axvline(0, color="0.7", lw=0.5)
        ax.set_aspect("equal")
        ax.set_title(f"{which} (n={phi.size})")
        ax.set_xlabel("phi (°)")
        ax.set_ylabel("psi (°)")
    fig.tight_layout()
    fig.savefig(path)
    return Path(path)


def plot_per_residue_rmsd(result: dict, path) -> Path:
    """Heavy-atom RMSD (Å, no superposition, all frames) of each residue along the sequence."""
    pr = result["per_residue"]
    n = len(pr["resids"])
    fig = _figure(max(6.0, min(20.0, 0.08 * n + 4)), 3.6)
    ax = fig.add_subplot(1, 1, 1)
    rmsd = np.array([np.nan if v is None else v for v in pr["rmsd"]], dtype=float)
    x = np.arange(n)
    colors = [REF_COLOR if not t else "0.6" for t in pr["terminal"]]
    ax.bar(x, np.nan_to_num(rmsd), color=colors, width=0.85)
    step = max(1, n // 25)
    ax.set_xticks(x[::step])
    ax.set_xticklabels([f"{c}{r}" if len(set(pr["chain_ids"])) > 1 else str(r)
                        for c, r in zip(pr["chain_ids"][::step], pr["resids"][::step])], rotation=90, fontsize=7)
    ax.set_xlim(-1, n)
    ax.set_xlabel("residue (terminal residues grey)")
    ax.set_ylabel("heavy-atom RMSD (Å)")
    mean = result.get("rmsd_heavy")
    ax.set_title("per-residue heavy-atom RMSD" + (f" (mean without termini {mean:.2f} Å)" if mean else ""),
                 fontsize=9)
    fig.tight_layout()
    fig.savefig(path)
    return Path(path)


def write_plots(result: dict, out_dir) -> list[Path]:
    """All figures into ``out_dir``: torsions.png, ramachandran.png, per_residue_rmsd.png."""
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    return [plot_torsion_distributions(result, out_dir / "torsions.png"),
            plot_ramachandran(result, out_dir / "ramachandran.png"),
            plot_per_residue_rmsd(result, out_dir / "per_residue_rmsd.png")]
