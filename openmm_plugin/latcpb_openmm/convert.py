"""MDAnalysis <-> OpenMM conversion: heavy-atom AtomGroup -> Topology (chains, disulfides, box), and back.

Positions are Å [A, 3] numpy arrays everywhere in this module except where an OpenMM ``Quantity`` is built (nm).
Chains: a new OpenMM chain starts exactly where (segid, chainID) changes in the input, and, when the input
Universe has peptide bonds (C-N between residues), where consecutive residues are not bonded. No distance rule:
the all-atom Universe of the backmapper already carries the one chain rule of ``latcpb.data.cg_topology``.
"""
from __future__ import annotations

import logging
import warnings
from dataclasses import dataclass, field

import numpy as np
import openmm.app as app
import openmm.unit as unit

from latcpb.data.cg_topology import describe_residue, topology_attr
from latcpb.data.names import is_hydrogen, normalize_atomname, normalize_resname
from latcpb.errors import LatcpbInputError
from latcpb.geometry import residue_constants as rc
from latcpb_openmm.forcefields import HIS_VARIANTS, is_disulfide_name, variant_of_name

log = logging.getLogger(__name__)
OXT_BOND = 1.25                 # Å, C-OXT of a carboxylate
DISULFIDE_DISTANCE = 2.5        # Å, SG-SG of two plain CYS taken as a disulfide (OpenMM's PDBFile uses 3 Å)
CYX_PAIR_DISTANCE = 8.0         # Å, furthest SG-SG at which two residues named CYX are paired without a bond
MIN_BOX_LENGTH = 2.0            # Å; shorter box edges (e.g. the PDB placeholder CRYST1 1 1 1) mean "no box"


def _element(name: str, element: str | None):
    """openmm.app.Element from an element symbol, or (without a usable one) from the first letter of the name."""
    for symbol in ((element or "").strip().capitalize(), name.strip().lstrip("0123456789")[:1].upper()):
        if symbol:
            try:
                return app.element.Element.getBySymbol(symbol)
            except KeyError:
                continue
    return None


# -- box ----------------------------------------------------------------------------------------------------------
def usable_box(dimensions):
    """[6] float (A, B, C Å, alpha, beta, gamma degrees) or None for a missing or placeholder box."""
    if dimensions is None:
        return None
    d = np.asarray(dimensions, dtype=np.float64).reshape(-1)
    if d.shape != (6,) or not np.isfinite(d).all() or (d[:3] < MIN_BOX_LENGTH).any() or (d[3:] <= 0).any():
        return None
    return d


def box_vectors(dimensions):
    """OpenMM periodic box vectors (Quantity, nm) of MDAnalysis dimensions [6] (Å, degrees); None without a box."""
    from openmm.app.internal.unitcell import computePeriodicBoxVectors

    d = usable_box(dimensions)
    if d is None:
        return None
    a, b, c = d[:3] * 0.1
    return computePeriodicBoxVectors(a, b, c, *np.deg2rad(d[3:]))


def dimensions_of(vectors) -> np.ndarray | None:
    """MDAnalysis dimensions [6] float32 (Å, degrees) of OpenMM box vectors (Quantity or [3, 3] nm); None if
    ``vectors`` is None."""
    from MDAnalysis.lib.mdamath import triclinic_box

    if vectors is None:
        return None
    if unit.is_quantity(vectors):
        vectors = vectors.value_in_unit(unit.nanometer)
    v = np.asarray([[float(x) for x in row] for row in vectors], dtype=np.float64) * 10.0
    return np.asarray(triclinic_box(*v), dtype=np.float32)


# -- heavy-atom topology ------------------------------------------------------------------------------------------
@dataclass
class HeavyStructure:
    """An AtomGroup as an OpenMM Topology of heavy atoms (hydrogens of the input dropped).

    ``topology``: openmm.app.Topology (standard residue/atom names, standard bonds, disulfides, box);
    ``source_index`` [M]: index into the input AtomGroup of each topology atom, -1 for atoms added here (OXT);
    ``variants``: per-residue variant for ``Modeller.addHydrogens`` (None: OpenMM decides);
    ``residue_labels``: 'HSD 12 (chain A)' style label of each topology residue for messages;
    ``input_resnames``: the input's residue name of each topology residue (HSD, CYX, ...), to name the output.
    """

    topology: app.Topology
    source_index: np.ndarray
    variants: list
    residue_labels: list
    input_resnames: list
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
    def unit_vector(v):
        n = np.linalg.norm(v)
        return v / n if np.isfinite(n) and n > 1e-6 else np.zeros(3)

    d = -(unit_vector(ca - c) + unit_vector(o - c))
    norm = np.linalg.norm(d)
    if not np.isfinite(norm) or norm < 1e-6:  # degenerate input (coincident or collinear atoms): any direction
        d = -unit_vector(ca - c) if np.linalg.norm(unit_vector(ca - c)) > 0 else np.array([1.0, 0.0, 0.0])
        norm = 1.0
    return c + OXT_BOND * d / norm


def _universe_bonds(atoms):
    """Bonds of the input among ``atoms`` as pairs of row indices [B, 2] (empty when the Universe has none)."""
    try:
        pairs = np.asarray(atoms.universe.bonds.indices, dtype=np.int64).reshape(-1, 2)
    except Exception:  # MDAnalysis NoDataError: no bonds in the topology
        return np.zeros((0, 2), dtype=np.int64)
    row = np.full(len(atoms.universe.atoms), -1, dtype=np.int64)
    row[atoms.indices] = np.arange(len(atoms))
    pairs = row[pairs]
    return pairs[(pairs >= 0).all(axis=1)]


def _rows_by_residue(atoms):
    """Row indices into ``atoms`` grouped per residue, residues in order of first appearance."""
    order = {}
    for i, rix in enumerate(atoms.resindices):
        order.setdefault(int(rix), []).append(i)
    return list(order.values())


def heavy_structure(atoms, xyz=None, histidine="auto", source="input") -> HeavyStructure:
    """Convert an MDAnalysis AtomGroup (heavy atoms; hydrogens are dropped) to an OpenMM heavy-atom topology.

    Residue/atom names are normalised (HSD -> HIS, OT1 -> O, ...) and the protonation/disulfide names become
    Modeller variants (HSD -> HID, CYX -> CYX); chains split where (segid, chainID) changes and, when the input
    has peptide bonds, between residues it does not bond; a C-terminal residue without OXT gets one built from C,
    CA, O. Bonds: OpenMM's standard templates, plus disulfides: SG-SG bonds of the input Universe, then pairs of
    residues named CYX (nearest SG first), then plain CYS with SG-SG < 2.5 Å in ``xyz`` [A, 3] Å (default:
    current positions). The input's box (``atoms.dimensions``) becomes the Topology's periodic box.
    ``histidine``: "auto" (names such as HSD/HIE decide, otherwise OpenMM by H-bonds), "HID", "HIE" or "HIP".
    """
    if histidine not in ("auto", *HIS_VARIANTS):
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
    names_upper = np.char.upper(np.char.strip(np.asarray(atoms.names).astype(str)))
    bonds = _universe_bonds(atoms)
    atom_rows = _rows_by_residue(atoms)
    residue_of_row = np.empty(len(atoms), dtype=np.int64)
    for k, rows in enumerate(atom_rows):
        residue_of_row[rows] = k
    # peptide bonds declared by the input: C of residue k bonded to N of residue k + 1
    bonded_next = set()
    for i, j in bonds:
        for a, b in ((i, j), (j, i)):
            if names_upper[a] == "C" and names_upper[b] == "N" and residue_of_row[b] == residue_of_row[a] + 1:
                bonded_next.add(int(residue_of_row[a]))
    use_bonds = bool(bonded_next)

    top = app.Topology()
    source_index, variants, labels, input_names, missing_oxt = [], [], [], [], []
    chain, prev_key = None, None
    chain_residues = []  # per chain: list of (residue, {name: topology index})
    sg_of_residue = {}   # residue ordinal -> SG topology index
    row_to_top = {}

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

    for k, rows in enumerate(atom_rows):
        first = rows[0]
        raw = str(atoms[first].resname).strip()
        resname = normalize_resname(raw) or raw.upper()
        key = (str(segids[first]), str(chain_ids[first]))
        if chain is None or key != prev_key or (use_bonds and (k - 1) not in bonded_next):
            close_chain()
            chain = top.addChain(id=str(chain_ids[first]).strip() or str(segids[first]).strip() or "A")
            chain_residues.append([])
        prev_key = key
        res_atom = atoms[first]
        residue = top.addResidue(resname, chain, id=str(res_atom.resid),
                                 insertionCode=str(topology_attr(atoms[[first]], "icodes", "")[0]).strip())
        labels.append(describe_residue(raw, res_atom.resid, str(chain_ids[first])))
        input_names.append(raw)
        variant = variant_of_name(raw)
        if resname == "HIS" and histidine != "auto":
            variant = histidine
        if variant is not None and normalize_resname(variant) != resname:  # e.g. a HIS variant on a non-HIS
            variant = None
        variants.append(variant)
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
            row_to_top[i] = names[name]
            source_index.append(i)
        if resname == "CYS" and "SG" in names:
            sg_of_residue[residue.index] = names["SG"]
        chain_residues[-1].append((residue, names))
    close_chain()
    hs = HeavyStructure(top, np.asarray(source_index, dtype=np.int64), variants, labels, input_names, missing_oxt)
    top.createStandardBonds()
    _create_disulfides(hs, bonds, row_to_top, sg_of_residue, hs.positions(xyz))
    vectors = box_vectors(getattr(atoms, "dimensions", None))
    if vectors is not None:
        top.setPeriodicBoxVectors(vectors)
    return hs


def _create_disulfides(hs: HeavyStructure, bonds, row_to_top, sg_of_residue, pos):
    """SG-SG bonds: declared by the input's bonds, then CYX pairs by distance, then close plain CYS pairs.

    Each SG bonds at most once; bonded cysteines get the Modeller variant CYX. A residue named CYX left without a
    partner is logged and treated as a free cysteine (its name keeps its place in the output).
    """
    top = hs.topology
    atoms = list(top.atoms())
    paired = {}

    def pair(ri, rj):
        paired[ri], paired[rj] = rj, ri
        top.addBond(atoms[sg_of_residue[ri]], atoms[sg_of_residue[rj]])

    residue_of_sg = {v: k for k, v in sg_of_residue.items()}
    for i, j in bonds:
        a, b = row_to_top.get(int(i)), row_to_top.get(int(j))
        if a in residue_of_sg and b in residue_of_sg:
            ri, rj = residue_of_sg[a], residue_of_sg[b]
            if ri != rj and ri not in paired and rj not in paired:
                pair(ri, rj)
    residues = sorted(sg_of_residue)
    xyz = pos[[sg_of_residue[r] for r in residues]] if residues else np.zeros((0, 3))
    d = np.linalg.norm(xyz[:, None] - xyz[None], axis=-1) if len(residues) else np.zeros((0, 0))
    named = [is_disulfide_name(hs.input_resnames[r]) for r in residues]
    for both_named, limit in ((True, CYX_PAIR_DISTANCE), (False, DISULFIDE_DISTANCE)):
        candidates = sorted(((d[i, j], i, j) for i in range(len(residues)) for j in range(i + 1, len(residues))
                             if d[i, j] < limit and (not both_named or (named[i] and named[j]))))
        for _, i, j in candidates:
            ri, rj = residues[i], residues[j]
            if ri not in paired and rj not in paired:
                pair(ri, rj)
    for r in residues:
        if r in paired:
            hs.variants[r] = "CYX"
        elif hs.variants[r] == "CYX":
            log.warning("%s is named as a disulfide cysteine but has no partner (no SG-SG bond in the input, no "
                        "other CYX SG within %.0f Å): treated as a free cysteine", hs.residue_labels[r],
                        CYX_PAIR_DISTANCE)
            hs.variants[r] = None


def disulfide_pairs(top: app.Topology):
    """[(residue index, residue index)] of the SG-SG bonds of an OpenMM topology."""
    return [(a.residue.index, b.residue.index) for a, b in top.bonds()
            if a.name == "SG" and b.name == "SG" and a.residue.index != b.residue.index]


# -- back to MDAnalysis -------------------------------------------------------------------------------------------
def load_frames(u, xyz, times=None, dimensions=None, dt=None, steps=None):
    """Give Universe ``u`` the in-memory frames ``xyz`` [F, A, 3] Å with per-frame ``times`` [F] ps, ``dimensions``
    [F, 6] / [6] / a list with None entries (no box where any frame lacks one), ``dt`` ps and MD ``steps`` [F]
    (``latcpb.io.universe_builder.TimedMemoryReader``, the core's reader); returns ``u``."""
    from latcpb.io.universe_builder import TimedMemoryReader

    xyz = np.asarray(xyz, dtype=np.float32).reshape(-1, len(u.atoms), 3)
    n = len(xyz)
    dims = None
    if dimensions is not None:
        rows = [usable_box(row) for row in (dimensions if isinstance(dimensions, (list, tuple)) else
                                            np.broadcast_to(np.asarray(dimensions, dtype=np.float64).reshape(-1, 6),
                                                            (n, 6)))]
        if len(rows) == n and all(row is not None for row in rows):
            dims = np.asarray(rows, dtype=np.float32)
    if times is not None:
        times = np.asarray(times, dtype=np.float64).reshape(-1)
        if len(times) != n:
            raise LatcpbInputError(f"{len(times)} times for {n} frames")
        if dt is None and n > 1 and times[1] != times[0]:
            dt = float(times[1] - times[0])
    if steps is not None and any(s is None for s in steps):
        steps = None
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        u.trajectory = TimedMemoryReader(xyz, order="fac", times=times, steps=steps, dimensions=dims,
                                         dt=1.0 if dt is None else float(dt))
    return u


def topology_to_universe(top: app.Topology, xyz: np.ndarray, times=None, dimensions=None, resnames=None, dt=None,
                         steps=None):
    """MDAnalysis Universe of an OpenMM topology with frames ``xyz`` [F, A, 3] Å (in memory; bonds included).

    Every OpenMM chain becomes its own segment (segid = chain id, made unique where ids repeat) with its chain ID;
    ``times`` [F] ps, ``dimensions`` [F, 6], ``dt``, ``steps`` as ``load_frames`` (default dimensions: the
    Topology's box);
    ``resnames`` [n_residues] replaces the residue names (e.g. the input's HSD/CYX names).
    """
    import MDAnalysis as mda

    atoms = list(top.atoms())
    residues = list(top.residues())
    chains = list(top.chains())
    u = mda.Universe.empty(len(atoms), n_residues=len(residues), n_segments=len(chains),
                           atom_resindex=np.array([a.residue.index for a in atoms], dtype=np.int64),
                           residue_segindex=np.array([r.chain.index for r in residues], dtype=np.int64),
                           trajectory=True)
    u.add_TopologyAttr("names", [a.name for a in atoms])
    u.add_TopologyAttr("types", [a.element.symbol if a.element is not None else a.name[0] for a in atoms])
    u.add_TopologyAttr("elements", [a.element.symbol if a.element is not None else "" for a in atoms])
    u.add_TopologyAttr("resnames", list(resnames) if resnames is not None else [r.name for r in residues])
    u.add_TopologyAttr("resids", [_int_id(r.id, r.index + 1) for r in residues])
    u.add_TopologyAttr("resnums", [_int_id(r.id, r.index + 1) for r in residues])
    u.add_TopologyAttr("icodes", [r.insertionCode or "" for r in residues])
    u.add_TopologyAttr("chainIDs", [a.residue.chain.id for a in atoms])
    u.add_TopologyAttr("segids", unique_chain_names(chains))
    u.add_TopologyAttr("altLocs", [""] * len(atoms))
    u.add_TopologyAttr("occupancies", np.ones(len(atoms)))
    u.add_TopologyAttr("tempfactors", np.zeros(len(atoms)))
    u.add_TopologyAttr("record_types", ["ATOM"] * len(atoms))
    u.add_TopologyAttr("bonds", [(b[0].index, b[1].index) for b in top.bonds()])
    if dimensions is None:
        dimensions = dimensions_of(top.getPeriodicBoxVectors())
    return load_frames(u, xyz, times, dimensions, dt=dt, steps=steps)


def unique_chain_names(chains) -> list:
    """One distinct name per OpenMM chain: its id, or id + ordinal where ids repeat or are empty."""
    ids = [c.id.strip() for c in chains]
    counts = {i: ids.count(i) for i in ids}
    return [i if i and counts[i] == 1 else f"{i or 'C'}{k + 1}" for k, i in enumerate(ids)]


def _int_id(text, default):
    try:
        return int(text)
    except (TypeError, ValueError):
        return default


def write_pdb(top: app.Topology, xyz: np.ndarray, path):
    """Write one frame ``xyz`` [A, 3] Å of an OpenMM topology as PDB (CONECT records for disulfides)."""
    with open(path, "w") as fh:
        app.PDBFile.writeFile(top, unit.Quantity(np.asarray(xyz, dtype=np.float64) * 0.1, unit.nanometer), fh,
                              keepIds=True)
