"""GeometryIdealizer: closed aromatic and proline rings, ideal peptide units (trans or cis as the CA trace says), the
generator's chi angles and CA trace kept; clash relief turns whole torsion groups."""
import os

import numpy as np
import pytest
import torch

from latcpb.geometry import residue_constants as rc
from latcpb.geometry.internal_coords import LayoutTensors, cartesian_to_internal, chi_angles
from latcpb.geometry.nerf import dihedral
from latcpb.model.geometric import GeometryIdealizer
from latcpb.training.dataset import load_entry
from latcpb.training.validation import entry_layout

DATA = os.path.join(os.path.dirname(__file__), "data")
MINI = os.path.join(DATA, "mini")
VAL = os.path.join(DATA, "val")


def _distorted(folder, name):
    """Reference slots [1, N, 15, 3] float64 with every atom but CA moved by 0.2 Å noise, its layout tensors, and
    the presence mask."""
    e = load_entry(folder, name, max_frames=1)
    _, lt = entry_layout(e)
    xyz = torch.as_tensor(e["coords"][:1], dtype=torch.float64)
    noise = 0.2 * torch.randn(xyz.shape, generator=torch.Generator().manual_seed(0), dtype=torch.float64)
    noise[..., 1, :] = 0.0
    return xyz + noise, lt, torch.as_tensor(e["present"])


def _distance(xyz, lt, residue, a, b, offset=0):
    """Distance Å between atom a of ``residue`` and atom b of ``residue + offset``."""
    names_a = rc.slot_names(rc.RESTYPES[int(lt.restype[residue])])
    names_b = rc.slot_names(rc.RESTYPES[int(lt.restype[residue + offset])])
    return float((xyz[0, residue, names_a.index(a)] - xyz[0, residue + offset, names_b.index(b)]).norm())


@pytest.mark.parametrize("folder,name", [(MINI, "T0922"), (VAL, "2JOF")])
def test_rings_close_and_peptides_are_ideal(folder, name):
    xyz, lt, present = _distorted(folder, name)
    out = GeometryIdealizer(level="standard")(xyz, lt)
    assert torch.equal(out[..., 1, :], xyz[..., 1, :])                       # CA trace kept exactly
    checked = 0
    for i, t in enumerate(lt.restype.tolist()):
        resname = rc.RESTYPES[t]
        for a, b, length in rc.RING_CLOSING_BONDS.get(resname, []):
            # before: the noise breaks the ring; after: every ring-closing bond within 0.03 Å of Engh & Huber
            assert abs(_distance(out, lt, i, a, b) - length) < 0.03, (name, i, resname, a, b)
            checked += 1
    assert checked >= 4
    chains = lt.chain_index.tolist()
    for i in range(len(chains) - 1):
        if chains[i] == chains[i + 1]:                                         # peptide C-N of the trans unit
            assert abs(_distance(out, lt, i, "C", "N", offset=1) - rc.BACKBONE_BONDS["C-N"]) < 0.05, (name, i)
    # the generator's chi angles are kept (prolines excepted: moved onto a closed ring)
    _, _, tau_in = cartesian_to_internal(xyz, lt)
    _, _, tau_out = cartesian_to_internal(out, lt)
    chi_in, mask = chi_angles(tau_in, lt)
    chi_out, _ = chi_angles(tau_out, lt)
    keep = mask & (lt.restype != rc.RESTYPE_INDEX["PRO"])[:, None]
    diff = torch.atan2(torch.sin(chi_out - chi_in), torch.cos(chi_out - chi_in))[0][keep]
    assert float(diff.abs().max()) < 1e-6


def test_cis_peptide_of_the_ca_trace_becomes_an_ideal_cis_unit():
    """T0892 (val) has cis peptides (CA-CA 2.8-2.9 Å) at SER1-PRO2, ARG141-THR142 and PRO144-PHE145."""
    xyz, lt, _ = _distorted(VAL, "T0892")
    out = GeometryIdealizer()(xyz, lt)
    ca = out[0, :, 1]
    gap = (ca[1:] - ca[:-1]).norm(dim=-1)
    cis = torch.nonzero((gap < 3.3) & (lt.chain_index[1:] == lt.chain_index[:-1])).flatten().tolist()
    assert len(cis) >= 2
    for i in cis:
        omega = torch.rad2deg(dihedral(out[0, i, 1], out[0, i, 2], out[0, i + 1, 0], out[0, i + 1, 1]))
        assert abs(float(omega)) < 10.0, (i, float(omega))
        assert abs(_distance(out, lt, i, "C", "N", offset=1) - 1.33) < 0.05


def test_clash_relief_turns_torsion_groups_together():
    """Relief may turn chi angles, but sibling atoms (VAL CG2 with CG1, LEU CD2 with CD1 ...) turn with them, rings
    and prolines stay as decoded."""
    from latcpb.model.latcpb_model import LatCPB
    from latcpb.model.refine import relieve_clashes
    from latcpb.training.dataset import crop_entry, pack_crops

    e = load_entry(MINI, "T0922", max_frames=1)
    b = pack_crops([crop_entry({k: torch.as_tensor(v) if isinstance(v, np.ndarray) else v for k, v in e.items()},
                               0, 0, 74)])
    torch.manual_seed(0)
    model = LatCPB({"width": 32, "latent_dim": 8, "n_codes": 8, "code_dim": 16, "cg_conv_width": 8,
                    "aa_atom_width": 8, "cg_layers": 1, "decoder_layers": 1, "denoiser_layers": 1,
                    "diffusion_steps": 50}).double().eval()
    lt = LayoutTensors(b.layout)
    ca = b.xyz[:, 1].double()
    with torch.no_grad():
        ctx = model.context(ca, lt, b.segment)
        h_cg = model.cg_encoder(ctx)
        internals = model.decoder(model.prior_cg(h_cg)[0], h_cg, ctx)
    relieved = relieve_clashes(ca, lt, internals, ctx, steps=10)
    tau0 = torch.atan2(internals[3], internals[2])
    tau1 = torch.atan2(relieved[3], relieved[2])
    turn = torch.atan2(torch.sin(tau1 - tau0), torch.cos(tau1 - tau0))           # [R, 15]
    assert float(turn.abs().max()) > 1e-3                                         # it did move something
    group = torch.as_tensor(rc.RESTYPE_TORSION_GROUP)[lt.restype]
    pro = lt.restype == rc.RESTYPE_INDEX["PRO"]
    assert float(turn[(group < 0) | pro[:, None]].abs().max()) < 1e-9          # rings, CB, backbone, prolines fixed
    for c in range(4):                                                            # one angle per group
        members = (group == c) & ~pro[:, None]
        rows = members.any(-1)
        first = torch.gather(turn, 1, members.float().argmax(-1, keepdim=True))
        spread = (turn - first).abs()[members & rows[:, None]]
        assert spread.numel() == 0 or float(spread.max()) < 1e-9


def test_d_residues_are_turned_to_l():
    """The mirror image of T0922 (every residue D) comes out of the idealiser with every residue L; the CA trace and
    the side-chain torsions relative to CB are kept."""
    from latcpb.metrics.structure import d_residues

    xyz, lt, present = _distorted(MINI, "T0922")
    mirror = xyz * torch.tensor([-1.0, 1.0, 1.0], dtype=xyz.dtype)
    mask = present.numpy()
    assert d_residues(mirror[0].numpy(), mask).sum() > 60
    out = GeometryIdealizer()(mirror, lt)
    assert d_residues(out[0].numpy(), mask).sum() == 0
    assert torch.equal(out[..., 1, :], mirror[..., 1, :])
