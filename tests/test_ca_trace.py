"""CA traces: what admits valid chemistry, and the smallest move to a trace that does (latcpb.geometry.ca_trace)."""
import math
import os
import warnings

import MDAnalysis as mda
import numpy as np
import pytest
import torch

from latcpb.errors import LatcpbInputError
from latcpb.geometry.ca_trace import DEFAULT_LIMITS, refine_ca_trace, trace_violations
from latcpb.geometry.internal_coords import ResidueLayout
from latcpb.geometry.residue_constants import RESTYPE_INDEX
from latcpb.training.augment import CGPerturbation, cg_like_trace

DATA = os.path.join(os.path.dirname(__file__), "data", "mini")


def _trace(name):
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        u = mda.Universe(os.path.join(DATA, name))
    ca = u.select_atoms("name CA")
    restype = np.array([RESTYPE_INDEX[r] for r in ca.resnames])
    return torch.tensor(ca.positions, dtype=torch.float64), restype


@pytest.fixture(scope="module")
def t0922():
    return _trace("T0922.pdb")


def _spacing(x):
    return torch.linalg.norm(x[..., 1:, :] - x[..., :-1, :], dim=-1)


def _angles_deg(x):
    u = x[..., :-2, :] - x[..., 1:-1, :]
    v = x[..., 2:, :] - x[..., 1:-1, :]
    cos = (u * v).sum(-1) / (u.norm(dim=-1) * v.norm(dim=-1))
    return torch.rad2deg(torch.acos(cos.clamp(-1, 1)))


@pytest.mark.parametrize("name", ["T0922.pdb", "CLN025.pdb"])
@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
def test_real_traces_are_valid_and_kept_bit_for_bit(name, dtype):
    ca, restype = _trace(name)
    ca = ca.to(dtype).expand(3, -1, -1).clone()
    chain = np.zeros(ca.shape[1], dtype=int)
    assert not trace_violations(ca, chain, restype).residues.any()
    res = refine_ca_trace(ca, chain, restype)
    assert res.ca.dtype == dtype
    assert torch.equal(res.ca, ca)
    assert not res.changed.any() and res.valid.all() and res.accepted.all()
    assert float(res.rms.max()) == 0.0 and float(res.max_move.max()) == 0.0


def test_cg_distortions_move_into_valid_ranges_within_half_an_angstrom(t0922):
    ca, restype = t0922
    layout = ResidueLayout.from_chains(restype, np.zeros(len(restype), dtype=int))
    g = torch.Generator().manual_seed(3)
    cg = cg_like_trace(ca.expand(8, -1, -1), layout.chain_index, CGPerturbation(), g)
    d = _spacing(cg)
    assert float(d.min()) < 3.0 and float(d.max()) > 4.3   # a CG-like spread, not atomistic
    before = trace_violations(cg, layout)
    assert (before.residues.float().mean(-1) > 0.2).all()
    res = refine_ca_trace(cg, layout, max_rms=0.5)
    assert res.valid.all() and res.accepted.all() and res.changed.all()
    assert float(res.rms.max()) <= 0.5
    after = trace_violations(res.ca, layout)
    assert not after.residues.any()
    lo, hi = DEFAULT_LIMITS.trans
    d = _spacing(res.ca)
    cis = d < DEFAULT_LIMITS.cis_split
    assert ((d[~cis] >= lo) & (d[~cis] <= hi)).all()
    ang = _angles_deg(res.ca)
    assert float(ang.min()) >= DEFAULT_LIMITS.angle[0] and float(ang.max()) <= DEFAULT_LIMITS.angle[1]
    # the move is the least needed: far smaller than the distortion itself
    distortion = (cg - ca).norm(dim=-1).square().mean(-1).sqrt()
    assert (res.rms < 0.6 * distortion).all()
    # beads not involved in a violation (nor moved by their neighbours' repair) stay exact
    untouched = (res.ca == cg).all(-1)
    assert untouched.any()


def test_straight_segments_are_bent_into_the_angle_range(t0922):
    ca, restype = t0922
    chain = np.zeros(len(ca), dtype=int)
    x = ca.clone()
    # residues 40..50 on a straight line, 3.8 Å apart, the rest of the chain shifted to join them
    a = x[40]
    direction = (x[50] - x[40]) / (x[50] - x[40]).norm()
    x[41:51] = a + 3.8 * torch.arange(1, 11, dtype=x.dtype)[:, None] * direction
    x[51:] += x[50] - ca[50]
    assert float(_angles_deg(x)[40:49].min()) > 179.9
    # and a whole chain of 30 beads built straight, as CG start structures are
    line = torch.zeros(30, 3, dtype=torch.float64)
    line[:, 0] = 3.8 * torch.arange(30)
    for trace, ch in ((x, chain), (line, np.zeros(30, dtype=int))):
        res = refine_ca_trace(trace, ch)
        assert bool(res.valid) and bool(res.accepted)
        ang = _angles_deg(res.ca)
        assert float(ang.max()) <= DEFAULT_LIMITS.angle[1] and float(ang.min()) >= DEFAULT_LIMITS.angle[0]
        assert float(res.rms) <= 0.5
        assert not trace_violations(res.ca, ch).residues.any()


def test_batched_equals_unbatched(t0922):
    ca, restype = t0922
    chain = np.zeros(len(ca), dtype=int)
    g = torch.Generator().manual_seed(11)
    cg = cg_like_trace(ca.expand(5, -1, -1), chain, CGPerturbation(), g).float()
    frames = torch.cat([cg, ca[None].float()])   # a valid frame in the batch too
    batched = refine_ca_trace(frames, chain, restype)
    for k in range(len(frames)):
        single = refine_ca_trace(frames[k], chain, restype)
        assert torch.equal(single.ca, batched.ca[k])
        assert float(single.rms) == pytest.approx(float(batched.rms[k]), abs=1e-12)


def test_keep_beads_reports_and_returns_the_input(t0922):
    ca, restype = t0922
    chain = np.zeros(len(ca), dtype=int)
    x = ca.clone()
    x[20] += torch.tensor([1.2, 0.0, 0.0], dtype=x.dtype)
    res = refine_ca_trace(x, chain, restype, keep_beads=True)
    assert torch.equal(res.ca, x)
    assert not bool(res.valid) and not bool(res.changed)
    assert res.violations_before.residues[0, 20]


def test_steps_contacts_and_cis(t0922):
    ca, restype = t0922
    n = len(ca)
    chain = np.zeros(n, dtype=int)
    x = ca.clone()
    x[11:] += 0.8 * (x[11] - x[10]) / (x[11] - x[10]).norm()          # one step stretched to ~4.6 Å
    x[31:] -= 1.1 * (x[31] - x[30]) / (x[31] - x[30]).norm()          # one step compressed to ~2.7 Å
    assert restype[31] != RESTYPE_INDEX["PRO"]
    res = refine_ca_trace(x, chain, restype, cis="proline")
    d = _spacing(res.ca)
    assert DEFAULT_LIMITS.trans[0] <= float(d[10]) <= DEFAULT_LIMITS.trans[1]
    assert DEFAULT_LIMITS.trans[0] <= float(d[30]) <= DEFAULT_LIMITS.trans[1]  # not a proline: not made cis
    assert float(res.rms) < 0.5
    # with the default ("auto"), a trace with so few violations is atomistic: the short step is the nearest cis one
    d = _spacing(refine_ca_trace(x, chain, restype).ca)
    assert DEFAULT_LIMITS.trans[0] <= float(d[10]) <= DEFAULT_LIMITS.trans[1]
    assert DEFAULT_LIMITS.cis[0] <= float(d[30]) <= DEFAULT_LIMITS.cis[1]
    # two chains whose beads overlap
    two = torch.cat([ca[:30], ca[:30] + torch.tensor([2.0, 0.0, 0.0], dtype=ca.dtype)])
    chains = np.repeat([0, 1], 30)
    assert trace_violations(two, chains).contact.any()
    res = refine_ca_trace(two, chains, max_rms=10.0)
    dist = torch.cdist(res.ca[:30], res.ca[30:])
    assert float(dist.min()) >= DEFAULT_LIMITS.min_contact - 1e-6 and bool(res.valid)
    # a 2.95 Å (cis) step: kept in a trace that is otherwise valid, unless cis is only allowed before prolines
    y = ca.clone()
    k = next(i for i in range(5, n - 5) if restype[i + 1] != RESTYPE_INDEX["PRO"])
    y[k + 1:] -= (3.8 - 2.95) * (y[k + 1] - y[k]) / (y[k + 1] - y[k]).norm()
    y = y[: k + 4]   # a short stretch, so that moving the tail does not make other violations
    short_chain = np.zeros(len(y), dtype=int)
    if trace_violations(y, short_chain, restype[: len(y)], cis="any").residues.any():
        pytest.skip("the shifted tail touches another residue")
    assert torch.equal(refine_ca_trace(y, short_chain, restype[: len(y)]).ca, y)
    res = refine_ca_trace(y, short_chain, restype[: len(y)], cis="proline")
    assert float(_spacing(res.ca)[k]) >= DEFAULT_LIMITS.trans[0]


def test_frames_needing_a_large_move_are_refused(t0922):
    ca, restype = t0922
    chain = np.zeros(len(ca), dtype=int)
    squeezed = ca.mean(0) + 0.6 * (ca - ca.mean(0))      # every step ~2.3 Å: no small move fixes it
    res = refine_ca_trace(torch.stack([ca, squeezed]), chain, restype, max_rms=0.5)
    assert bool(res.accepted[0]) and not bool(res.accepted[1])
    assert float(res.rms[1]) > 0.5 or not bool(res.valid[1])
    with pytest.raises(LatcpbInputError, match="frame 7"):
        res.raise_if_refused(frames=[6, 7], source="cg.xtc")


def test_limits_agree_with_the_backbone_builder():
    backbone = pytest.importorskip("latcpb.geometry.backbone")
    assert DEFAULT_LIMITS.cis_split == backbone.CIS_CA_DISTANCE
    assert math.isclose(DEFAULT_LIMITS.trans[0] + DEFAULT_LIMITS.trans[1], 2 * 3.80, abs_tol=0.01)
