"""LatCPB network: invariance of the encoders, equivariance of the decoded structure, losses, samplers."""
import math

import numpy as np
import pytest
import torch

from latcpb.geometry.internal_coords import LayoutTensors
from latcpb.model.latcpb_model import DEFAULT_LOSS, LatCPB
from latcpb.model.losses import clash_loss
from latcpb.training.dataset import load_entry, pack_crops, crop_entry

DATA = "tests/data/mini"
TINY = {"width": 32, "latent_dim": 8, "n_codes": 8, "code_dim": 16, "cg_conv_width": 8, "aa_atom_width": 8,
        "cg_layers": 1, "decoder_layers": 1, "denoiser_layers": 1, "diffusion_steps": 50}


def random_rotation(gen):
    q, r = torch.linalg.qr(torch.randn(3, 3, generator=gen, dtype=torch.float64))
    q = q * torch.sign(torch.diagonal(r))
    if torch.det(q) < 0:
        q[:, 0] = -q[:, 0]
    return q


@pytest.fixture(scope="module")
def system():
    e = load_entry(DATA, "T0922", max_frames=1)
    b = pack_crops([crop_entry({k: torch.as_tensor(v) if isinstance(v, np.ndarray) else v for k, v in e.items()},
                               0, 0, 74)])
    return b


@pytest.fixture(scope="module")
def model():
    torch.manual_seed(0)
    return LatCPB(TINY).double().eval()


def test_encoders_invariant_and_structure_equivariant(system, model):
    gen = torch.Generator().manual_seed(1)
    lt = LayoutTensors(system.layout)
    xyz = system.xyz.double()
    present = system.present
    outs = []
    for k in range(3):
        rot = torch.eye(3, dtype=torch.float64) if k == 0 else random_rotation(gen)
        shift = torch.randn(3, generator=gen, dtype=torch.float64) * 10 * (k > 0)
        x = xyz @ rot.T + shift
        x = torch.where(present[..., None], x, torch.zeros_like(x))
        with torch.no_grad():
            ctx = model.context(x[:, 1], lt, system.segment)
            h_cg = model.cg_encoder(ctx)
            mu, logvar, _ = model.encode(ctx, x, present, h_cg)
            pred = model.sample_coordinates(x[:, 1], lt, system.segment, mode="posterior", reference=(x, present))
        outs.append((h_cg, mu, logvar, (pred - shift) @ rot))
    for h_cg, mu, logvar, pred in outs[1:]:
        assert (h_cg - outs[0][0]).abs().max() < 1e-4
        assert (mu - outs[0][1]).abs().max() < 1e-4
        assert (logvar - outs[0][2]).abs().max() < 1e-4
        mask = LayoutTensors(system.layout).atom_mask
        assert (pred - outs[0][3])[mask].abs().max() < 1e-4


def test_cg_features_see_chirality(system, model):
    """A mirrored CA trace is a different input: signed virtual dihedrals flip, so the features change."""
    lt = LayoutTensors(system.layout)
    ca = system.xyz[:, 1].double()
    mirror = ca * torch.tensor([-1.0, 1.0, 1.0], dtype=torch.float64)
    with torch.no_grad():
        h1 = model.cg_encoder(model.context(ca, lt, system.segment))
        h2 = model.cg_encoder(model.context(mirror, lt, system.segment))
    assert (h1 - h2).abs().max() > 1e-2


def test_clash_loss_positive_for_overlap_zero_when_apart():
    from latcpb.geometry.internal_coords import ResidueLayout
    from latcpb.model.cg_features import chain_ends
    layout = ResidueLayout.from_chains([0, 0, 0, 0], [0, 0, 1, 1])
    lt = LayoutTensors(layout)
    xyz = torch.zeros(4, 15, 3)
    # residues 0/1 and 2/3 as two far-apart chains: atoms spread 1.5 A along x inside each residue
    for r in range(4):
        xyz[r] = torch.arange(15)[:, None] * torch.tensor([1.5, 0.0, 0.0]) + torch.tensor([0.0, 4.0 * r, 0.0])
    src, dst = torch.tensor([1, 0, 2, 3, 2, 0]), torch.tensor([0, 1, 3, 2, 0, 2])
    _, last = chain_ends(lt)
    mask = torch.ones(4, dtype=torch.bool)
    apart = clash_loss(xyz, lt, src, dst, last, mask, clash_distance=2.5)
    assert float(apart) == 0.0
    xyz[2] = xyz[0] + torch.tensor([0.3, 0.0, 0.0])   # residue 2 (other chain) overlaps residue 0
    xyz[3] = xyz[2] + torch.tensor([0.0, 3.8, 0.0])
    assert float(clash_loss(xyz, lt, src, dst, last, mask, clash_distance=2.5)) > 1.0


def test_autoencoder_losses_finite_and_weighted(system):
    torch.manual_seed(0)
    model = LatCPB(TINY)
    lt = LayoutTensors(system.layout)
    loss, logs = model.autoencoder_loss(system.xyz, system.present, system.loss_mask, lt, system.segment, DEFAULT_LOSS)
    assert torch.isfinite(loss)
    for key in ("L_R", "L_E", "L_M", "L_C", "L_K", "mse", "torsion", "angle", "bond"):
        assert torch.isfinite(logs[key])
    zero = {k: 0.0 for k in DEFAULT_LOSS}
    zero.update(tau=0.1, clash_distance=2.5)
    loss0, _ = model.autoencoder_loss(system.xyz, system.present, system.loss_mask, lt, system.segment, zero)
    assert float(loss0.detach()) == 0.0


def test_discrete_off_plain_gaussian_prior(system):
    torch.manual_seed(0)
    model = LatCPB({**TINY, "discrete": False})
    assert not hasattr(model, "prior")
    lt = LayoutTensors(system.layout)
    _, logs = model.autoencoder_loss(system.xyz, system.present, system.loss_mask, lt, system.segment, DEFAULT_LOSS)
    assert float(logs["L_C"]) == 0.0 and float(logs["L_M"]) > 0.0


def test_samplers_reproducible_and_temperature(system, model):
    lt = LayoutTensors(system.layout)
    ca = system.xyz[:, 1].double()

    def run(seed, temperature, mode="ddim"):
        g = torch.Generator().manual_seed(seed)
        with torch.no_grad():
            return model.sample_coordinates(ca, lt, system.segment, mode=mode, steps=5, temperature=temperature,
                                            generator=g)
    assert torch.equal(run(0, 1.0), run(0, 1.0))
    assert not torch.equal(run(0, 1.0), run(1, 1.0))
    assert torch.equal(run(0, 0.0), run(1, 0.0))          # deterministic mode-seeking sample
    assert torch.isfinite(run(0, 1.0, "ddpm")).all()


def test_cosine_schedule_bounds():
    from latcpb.model.diffusion import cosine_betas
    b = cosine_betas(500)
    ab = torch.cumprod(1 - b, 0)
    assert b.min() > 0 and b.max() <= 0.999
    assert ab[0] > 0.999 and ab[-1] < 1e-3
    assert math.isclose(float(ab[249]), 0.5, abs_tol=0.05)


def test_scalar_fast_path_equals_e3nn_tensor_product():
    from latcpb.model.equivariant import PointConv
    torch.manual_seed(0)
    conv = PointConv("6x0e", "6x0e + 3x1o + 2x2e", cutoff=10.0)
    assert conv.scalar_input
    x, sh_in = torch.randn(50, 6), torch.randn(50, 3)
    from e3nn import o3
    sh = o3.spherical_harmonics(conv.irreps_sh, sh_in, normalize=True, normalization="component")
    w = torch.randn(50, conv.tp.weight_numel)
    assert torch.allclose(conv._scalar_tp(x, sh, w), conv.tp(x, sh, w), atol=1e-5)
