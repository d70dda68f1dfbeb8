"""MDAnalysis <-> OpenMM conversion: heavy-atom Universe -> Topology + positions, hydrogens, and back.

Positions are Å [A, 3] numpy arrays everywhere in this module except where an OpenMM ``Quantity`` is built (nm).
"""
from __future__ import annotations

import random
from dataclasses import dataclass, field

import numpy as np
import openmm.app as app
import openmm.unit as unit

from latcpb.data.cg_topology import CHAIN_BREAK_DISTANCE, describe_residue, topology_attr
from latcpb.data.names import is_hydrogen, normalize_atomname, normalize_resname
from latcpb.errors import LatcpbInputError
from latcpb.geometry import residue_constants as rc

# Force field name -> (protein XML, {solvent: implicit-solvent XML}); "vacuum" needs no extra file.
FORCEFIELDS = {
    "amber14": ("amber14-all.xml", {"obc": "implicit/obc2.xml", "gbn2": "implicit/gbn2.xml"}),
    "amber99sbildn": ("amber99sbildn.xml", {"obc": "amber99_obc.xml"}),
    "amber19": ("amber19-all.xml", {}),
    "charmm36": ("charmm36.xml", {}),
}
SOLVENTS = ("vacuum", "obc", "gbn2")

# Protonation encoded in an input residue name -> Modeller.addHydrogens variant.
_VARIANT_HINTS = {
    "HSD": "HID", "HID": "HID", "HISD": "HID", "HSE": "HIE", "HIE": "HIE", "HISE": "HIE",
    "HSP": "HIP", "HIP": "HIP", "HISH": "HIP", "ASH": "ASH", "ASPP": "ASH", "ASPH": "ASH",
    "GLH": "GLH", "GLUP": "GLH", "GLUH": "GLH", "LYN": "LYN", "LSN": "LYN", "LYSN": "LYN",
}
_HIS_VARIANTS = ("HID", "HIE", "HIP")
OXT_BOND = 1.25  # Å, C-OXT of a carboxylate


def load_forcefield(forcefield="amber14", solvent="obc") -> app.ForceField:
    """OpenMM ForceField for a name in ``FORCEFIELDS`` (or a list of XML files) and a solvent model.

    Raises ``LatcpbInputError`` for an unknown name or a solvent the force field has no model for.
    """
    if solvent not in SOLVENTS:
        raise LatcpbInputError(f"unknown solvent {solvent!r}; choose one of {', '.join(SOLVENTS)}")
    if isinstance(forcefield, (list, tuple)):
        files = list(forcefield)
    else:
        if forcefield not in FORCEFIELDS:
            raise LatcpbInputError(f"unknown force field {forcefield!r}; choose one of {', '.join(FORCEFIELDS)}"
                                   " or pass a list of OpenMM XML files")
        protein, implicit = FORCEFIELDS[forcefield]
        files = [protein]
        if solvent != "vacuum":
            if solvent not in implicit:
                have = ", ".join(["vacuum", *implicit]) or "vacuum"
                raise LatcpbInputError(f"force field {forcefield!r} has no {solvent!r} implicit-solvent model"
                                       f" in OpenMM; available: {have}")
            files.append(implicit[solvent])
    try:
        return app.ForceField(*files)
    except (ValueError, OSError) as err:
        raise LatcpbInputError(f"cannot load force field files {files}: {err}") from err


def _element(name: str, element: str | None):
    """openmm.app.Element from an element symbol, or (without a usable one) from the first letter of the name."""
    for symbol in ((element or "").strip().capitalize(), name.strip().lstrip("0123456789")[:1].upper()):
        if symbol:
            try:
                return app.element.Element.getBySymbol(symbol)
            except KeyError:
                continue
    return None


@dataclass
class HeavyStructure:
    """An AtomGroup as an OpenMM Topology of heavy atoms (hydrogens of the input dropped).

    ``topology``: openmm.app.Topology (standard residue/atom names, standard bonds, disulfides);
    ``source_index`` [M]: index into the input AtomGroup of each topology atom, -1 for atoms added here (OXT);
    ``variants``: per-residue hint for ``Modeller.addHydrogens`` (None: OpenMM decides);
    ``residue_labels``: 'HSD 12 (chain A)' style label of each topology residue for messages.
    """

    topology: app.Topology
    source_index: np.ndarray
    variants: list
    residue_labels: list
    missing_oxt: list = field(default_factory=list)  # [(oxt topology index, C, CA, O topology indices)]

    @property
    def n_atoms(self) -> int:
        return len(self.source_index)

    def positions(self, xyz: np.ndarray) -> np.ndarray:
        """Input positions [A, 3] Å -> positions of the topology atoms [M, 3] Å (added OXT built from C, CA, O)."""
        out = np.zeros((self.n_atoms, 3), dtype=np.float64)
        have = self.source_index >= 0
        out[have] = xyz[self.source_index[have]]
        for oxt, c, ca, o in self.missing_oxt:
            out[oxt] = place_oxt(out[c], out[ca], out[o])
        return out


def place_oxt(c: np.ndarray, ca: np.ndarray, o: np.ndarray) -> np.ndarray:
    """OXT [3] Å in the C-CA-O plane, 1.25 Å from C, opposite O across the C-CA axis (~120° from both)."""
    u_ca = (ca - c) / np.linalg.norm(ca - c)
    u_o = (o - c) / np.linalg.norm(o - c)
    d = -(u_ca + u_o)
    norm = np.linalg.norm(d)
    if not np.isfinite(norm) or norm < 1e-6:  # degenerate input: any direction away from CA
        d = -u_ca
        norm = 1.0
    return c + OXT_BOND * d / norm


def heavy_structure(atoms, xyz=None, histidine="auto", source="input") -> HeavyStructure:
    """Convert an MDAnalysis AtomGroup (heavy atoms; hydrogens are dropped) to an OpenMM heavy-atom topology.

    Residue/atom names are normalised (HSD -> HIS, OT1 -> O, ...); chains split at chain ID/segment changes and at
    CA-CA > 4.2 Å; a C-terminal residue without OXT gets one built from C, CA, O. Bonds come from OpenMM's standard
    templates plus disulfides (SG-SG < 2.5 Å in ``xyz`` [A, 3] Å, default: current positions).
    ``histidine``: "auto" (names such as HSD/HIE decide, otherwise OpenMM by H-bonds), "HID", "HIE" or "HIP".
    """
    if histidine not in ("auto", *_HIS_VARIANTS):
        raise LatcpbInputError(f"histidine must be 'auto', 'HID', 'HIE' or 'HIP', not {histidine!r}")
    if len(atoms) == 0:
        raise LatcpbInputError(f"{source}: no atoms to convert")
    xyz = np.asarray(atoms.positions if xyz is None else xyz, dtype=np.float64)
    try:
        elements = list(atoms.elements)
    except Exception:  # MDAnalysis NoDataError: decide by name
        elements = [None] * len(atoms)
    chain_ids = topology_attr(atoms, "chainIDs", "")
    segids = topology_attr(atoms, "segids", "")
    top = app.Topology()
    source_index, variants, labels, missing_oxt = [], [], [], []
    chain = None
    prev_key, prev_ca = None, None
    residues = atoms.residues
    atom_rows = _rows_by_residue(atoms)
    chain_residues = []  # per chain: list of (residue, {name: topology index})

    def close_chain():
        """Carboxylate oxygen on the chain's C-terminal residue if it lacks one; added while that residue is the
        last one created, since OpenMM wants the atoms of a residue contiguous."""
        if not chain_residues or not chain_residues[-1]:
            return
        residue, names = chain_residues[-1][-1]
        if residue.name in rc.RESTYPE_INDEX and "OXT" not in names and all(k in names for k in ("C", "CA", "O")):
            oxt = top.addAtom("OXT", app.element.oxygen, residue).index
            missing_oxt.append((oxt, names["C"], names["CA"], names["O"]))
            source_index.append(-1)

    for res_ix, rows in zip(residues.resindices, atom_rows):
        first = rows[0]
        raw = str(atoms[first].resname).strip()
        resname = normalize_resname(raw) or raw.upper()
        ca_rows = [i for i in rows if atoms[i].name.strip().upper() == "CA"]
        ca = xyz[ca_rows[0]] if ca_rows else None
        key = (str(segids[first]), str(chain_ids[first]))
        gap = (prev_ca is not None and ca is not None
               and np.linalg.norm(ca - prev_ca) > CHAIN_BREAK_DISTANCE)
        if chain is None or key != prev_key or gap:
            close_chain()
            chain = top.addChain(id=str(chain_ids[first]).strip() or str(segids[first]).strip() or "A")
            chain_residues.append([])
        prev_key, prev_ca = key, (ca if ca is not None else prev_ca)
        atoms_res = atoms[first]
        residue = top.addResidue(resname, chain, id=str(atoms_res.resid),
                                 insertionCode=str(topology_attr(atoms[[first]], "icodes", "")[0]).strip())
        labels.append(describe_residue(raw, atoms_res.resid, str(chain_ids[first])))
        if histidine != "auto" and resname == "HIS":
            variants.append(histidine)
        else:
            variants.append(_VARIANT_HINTS.get(raw.upper()) if resname in ("HIS", "ASP", "GLU", "LYS") else None)
        names = {}
        standard = resname in rc.RESTYPE_INDEX
        for i in rows:
            a = atoms[i]
            if is_hydrogen(a.name, elements[i]):
                continue
            name = normalize_atomname(resname, a.name) if standard else a.name.strip()
            if name in names:  # alternate location or duplicate: keep the first
                continue
            names[name] = top.addAtom(name, _element(name, elements[i]), residue).index
            source_index.append(i)
        chain_residues[-1].append((residue, names))
    close_chain()
    hs = HeavyStructure(top, np.asarray(source_index, dtype=np.int64), variants, labels, missing_oxt)
    hs.topology.createStandardBonds()
    pos = hs.positions(xyz)
    _create_disulfides(hs.topology, pos)
    return hs


def _rows_by_residue(atoms):
    """Row indices into ``atoms`` grouped per residue, residues in order of first appearance."""
    order = {}
    for i, rix in enumerate(atoms.resindices):
        order.setdefault(int(rix), []).append(i)
    return list(order.values())


def _create_disulfides(top: app.Topology, pos: np.ndarray, cutoff=2.5):
    """Bond CYS SG pairs closer than ``cutoff`` Å (each SG at most once; Modeller then picks CYX)."""
    sg = [a for a in top.atoms() if a.residue.name in ("CYS", "CYX") and a.name == "SG"]
    if len(sg) < 2:
        return
    xyz = pos[[a.index for a in sg]]
    d = np.linalg.norm(xyz[:, None] - xyz[None], axis=-1)
    used = set()
    for i, j in sorted(((i, j) for i in range(len(sg)) for j in range(i + 1, len(sg)) if d[i, j] < cutoff),
                       key=lambda ij: d[ij]):
        if i in used or j in used:
            continue
        used.update((i, j))
        top.addBond(sg[i], sg[j])


def add_hydrogens(hs: HeavyStructure, heavy_xyz: np.ndarray, forcefield: app.ForceField | None = None, ph=7.0,
                  variants=None, seed=0):
    """Hydrogens on a heavy-atom topology with ``Modeller.addHydrogens`` (protonation by pH and H-bonds).

    heavy_xyz [M, 3] Å positions of ``hs.topology``; ``variants`` (per residue, None = OpenMM decides) defaults to
    the name hints of ``hs``. Hydrogens are placed by Modeller's own quick minimisation (not with ``forcefield``:
    the force field only checks that every residue has a template). Modeller draws from Python's ``random``; it is
    seeded with ``seed`` and the caller's random state restored afterwards.
    Returns (topology with H, positions [T, 3] Å, heavy index [M] into the new topology, variants used).
    Raises ``LatcpbInputError`` naming residues without hydrogen definitions or force-field templates.
    """
    modeller = app.Modeller(hs.topology, unit.Quantity(np.asarray(heavy_xyz, dtype=np.float64) * 0.1,
                                                         unit.nanometer))
    state = random.getstate()
    random.seed(seed)
    try:
        used = modeller.addHydrogens(None, pH=ph, variants=list(variants if variants is not None else hs.variants))
    except (ValueError, KeyError) as err:  # OpenMM: unknown variant, bad residue
        raise LatcpbInputError(f"cannot add hydrogens: {err}") from err
    finally:
        random.setstate(state)
    top = modeller.topology
    if forcefield is not None:
        check_residues(top, hs.residue_labels, forcefield)
    pos = np.asarray(modeller.positions.value_in_unit(unit.nanometer), dtype=np.float64) * 10.0
    # heavy atoms keep their order; map them by (residue ordinal, name)
    where = {(a.residue.index, a.name): a.index for a in top.atoms()}
    heavy_index = np.array([where[(a.residue.index, a.name)] for a in hs.topology.atoms()], dtype=np.int64)
    return top, pos, heavy_index, list(used)


def check_residues(top: app.Topology, labels, forcefield: app.ForceField):
    """Raise ``LatcpbInputError`` naming the residues of ``top`` (hydrogens added) no template of ``forcefield``
    matches; ``labels`` [n_residues] names them as the input did."""
    unmatched = forcefield.getUnmatchedResidues(top)
    if not unmatched:
        return
    names = sorted({r.name for r in unmatched})
    known = set(forcefield._templates)  # template names, to tell unknown residues from incomplete ones
    unknown = [labels[r.index] for r in unmatched if r.name not in known and not any(
        t.endswith(r.name) and len(t) == len(r.name) + 1 for t in known)]
    shown = unknown or [labels[r.index] for r in unmatched]
    text = ", ".join(shown[:10]) + (f" and {len(shown) - 10} more" if len(shown) > 10 else "")
    if unknown:
        raise LatcpbInputError(f"the force field has no template for residue(s) {text} (residue names: "
                               f"{', '.join(names)}); remove them or choose another force field")
    raise LatcpbInputError(f"no force-field template matches residue(s) {text}: atoms missing or misnamed")


def topology_to_universe(top: app.Topology, xyz: np.ndarray):
    """MDAnalysis Universe of an OpenMM topology with frames ``xyz`` [F, A, 3] Å (in memory; bonds included)."""
    import MDAnalysis as mda
    from MDAnalysis.coordinates.memory import MemoryReader

    atoms = list(top.atoms())
    residues = list(top.residues())
    chains = list(top.chains())
    xyz = np.asarray(xyz, dtype=np.float32).reshape(-1, len(atoms), 3)
    u = mda.Universe.empty(len(atoms), n_residues=len(residues), n_segments=len(chains),
                           atom_resindex=np.array([a.residue.index for a in atoms]),
                           residue_segindex=np.array([r.chain.index for r in residues]), trajectory=True)
    u.add_TopologyAttr("names", [a.name for a in atoms])
    u.add_TopologyAttr("types", [a.element.symbol if a.element is not None else a.name[0] for a in atoms])
    u.add_TopologyAttr("elements", [a.element.symbol if a.element is not None else "" for a in atoms])
    u.add_TopologyAttr("resnames", [r.name for r in residues])
    u.add_TopologyAttr("resids", [_int_id(r.id, r.index + 1) for r in residues])
    u.add_TopologyAttr("icodes", [r.insertionCode or "" for r in residues])
    u.add_TopologyAttr("chainIDs", [a.residue.chain.id for a in atoms])
    u.add_TopologyAttr("segids", [c.id for c in chains])
    u.add_TopologyAttr("altLocs", [""] * len(atoms))
    u.add_TopologyAttr("occupancies", np.ones(len(atoms)))
    u.add_TopologyAttr("tempfactors", np.zeros(len(atoms)))
    u.add_TopologyAttr("record_types", ["ATOM"] * len(atoms))
    u.add_TopologyAttr("bonds", [(b[0].index, b[1].index) for b in top.bonds()])
    u.load_new(xyz, format=MemoryReader)
    return u


def _int_id(text, default):
    try:
        return int(text)
    except (TypeError, ValueError):
        return default


def to_openmm(atoms, xyz=None, forcefield="amber14", solvent="obc", ph=7.0, histidine="auto", hydrogens=True):
    """One frame of an AtomGroup -> (openmm.app.Topology, positions Quantity in nm).

    ``xyz`` [A, 3] Å (default: current positions); ``forcefield``/``solvent`` name the templates used to add
    hydrogens (``hydrogens=False``: heavy atoms only, standard bonds and added OXT).
    """
    hs = heavy_structure(atoms, xyz, histidine=histidine)
    heavy = hs.positions(np.asarray(atoms.positions if xyz is None else xyz, dtype=np.float64))
    if not hydrogens:
        return hs.topology, unit.Quantity(heavy * 0.1, unit.nanometer)
    ff = forcefield if isinstance(forcefield, app.ForceField) else load_forcefield(forcefield, solvent)
    top, pos, _, _ = add_hydrogens(hs, heavy, ff, ph=ph)
    return top, unit.Quantity(pos * 0.1, unit.nanometer)


def write_pdb(top: app.Topology, xyz: np.ndarray, path):
    """Write one frame ``xyz`` [A, 3] Å of an OpenMM topology as PDB (CONECT records for disulfides)."""
    with open(path, "w") as fh:
        app.PDBFile.writeFile(top, unit.Quantity(np.asarray(xyz, dtype=np.float64) * 0.1, unit.nanometer), fh,
                              keepIds=True)


class HydrogenPlacer:
    """Rebuild hydrogens of one hydrogenated topology on new heavy-atom positions, fast (numpy, no minimisation).

    Each H keeps the coordinates it had, in a reference frame, in the local frame of its parent P and two heavy
    atoms A, B near P (A bonded to P; B bonded to P or A). ``top`` openmm Topology with H; ``ref_xyz`` [T, 3] Å.
    """

    def __init__(self, top: app.Topology, ref_xyz: np.ndarray):
        atoms = list(top.atoms())
        is_h = np.array([a.element is not None and a.element.symbol == "H" for a in atoms])
        heavy_nb = {a.index: [] for a in atoms}
        parent = {}
        for a, b in top.bonds():
            if is_h[a.index] != is_h[b.index]:
                h, p = (a, b) if is_h[a.index] else (b, a)
                parent[h.index] = p.index
            elif not is_h[a.index]:
                heavy_nb[a.index].append(b.index)
                heavy_nb[b.index].append(a.index)
        self.h_index = np.array(sorted(parent), dtype=np.int64)
        p = np.array([parent[h] for h in self.h_index], dtype=np.int64)
        a_ix, b_ix = [], []
        for pi in p:
            nb = heavy_nb[pi]
            if len(nb) >= 2:
                a_ix.append(nb[0]), b_ix.append(nb[1])
            elif len(nb) == 1:
                second = [k for k in heavy_nb[nb[0]] if k != pi]
                a_ix.append(nb[0]), b_ix.append(second[0] if second else -1)
            else:
                a_ix.append(-1), b_ix.append(-1)
        self.p, self.a, self.b = p, np.array(a_ix, dtype=np.int64), np.array(b_ix, dtype=np.int64)
        self.framed = (self.a >= 0) & (self.b >= 0)
        ref_xyz = np.asarray(ref_xyz, dtype=np.float64)
        offset = ref_xyz[self.h_index] - ref_xyz[self.p]
        self.offset = offset
        frames = self._frames(ref_xyz)
        self.local = np.einsum("hij,hj->hi", frames, offset)

    def _frames(self, xyz):
        """Orthonormal frames [K, 3, 3] (rows e1, e2, e3) at each H's parent; identity where not defined."""
        pp = xyz[self.p]
        e1 = xyz[np.where(self.a >= 0, self.a, self.p)] - pp
        v = xyz[np.where(self.b >= 0, self.b, self.p)] - pp
        e1 = e1 / np.maximum(np.linalg.norm(e1, axis=-1, keepdims=True), 1e-9)
        e2 = v - np.sum(v * e1, axis=-1, keepdims=True) * e1
        n2 = np.linalg.norm(e2, axis=-1, keepdims=True)
        ok = self.framed & (n2[:, 0] > 1e-6)
        e2 = e2 / np.maximum(n2, 1e-9)
        e3 = np.cross(e1, e2)
        frames = np.stack([e1, e2, e3], axis=1)
        frames[~ok] = np.eye(3)
        return frames

    def place(self, xyz: np.ndarray) -> np.ndarray:
        """Positions [T, 3] Å with valid heavy atoms -> copy with every hydrogen rebuilt."""
        out = np.array(xyz, dtype=np.float64, copy=True)
        frames = self._frames(out)
        out[self.h_index] = out[self.p] + np.einsum("hji,hj->hi", frames, self.local)
        return out
