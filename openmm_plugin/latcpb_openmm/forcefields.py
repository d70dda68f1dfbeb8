"""Force fields of the OpenMM stage and the protonation/disulfide residue names they and ``Modeller`` take.

Input residue names that encode a protonation state or a disulfide (CHARMM HSD/HSE/HSP, Amber HID/HIE/HIP, CYX,
ASH, GLH, LYN, GROMACS HISD/HISE/HISH/HISA/HISB, ...) map to the variant names of ``Modeller.addHydrogens``
(``variant_of_name``); the OpenMM topology itself uses the standard names (HIS, CYS, ...), which every force field's
templates match by their atoms and bonds.
"""
from __future__ import annotations

import openmm.app as app

from latcpb.errors import LatcpbInputError

# Force field name -> (protein XML, {solvent: implicit-solvent XML}); "vacuum" needs no extra file.
FORCEFIELDS = {
    "amber14": ("amber14-all.xml", {"obc": "implicit/obc2.xml", "gbn2": "implicit/gbn2.xml"}),
    "amber99sbildn": ("amber99sbildn.xml", {"obc": "amber99_obc.xml"}),
    "amber19": ("amber19-all.xml", {}),
    "charmm36": ("charmm36.xml", {}),
}
SOLVENTS = ("vacuum", "obc", "gbn2")
HIS_VARIANTS = ("HID", "HIE", "HIP")

# Input residue name -> Modeller.addHydrogens variant (None: pH and OpenMM's rules decide).
_VARIANT_OF_NAME = {
    "HSD": "HID", "HID": "HID", "HISD": "HID", "HISA": "HID", "HIS1": "HID",
    "HSE": "HIE", "HIE": "HIE", "HISE": "HIE", "HISB": "HIE", "HIS2": "HIE",
    "HSP": "HIP", "HIP": "HIP", "HISH": "HIP", "HSH": "HIP",
    "CYX": "CYX", "CYS2": "CYX", "CSS": "CYX",
    "ASH": "ASH", "ASPP": "ASH", "ASPH": "ASH",
    "GLH": "GLH", "GLUP": "GLH", "GLUH": "GLH",
    "LYN": "LYN", "LSN": "LYN", "LYSN": "LYN", "LYP": "LYS", "LYSH": "LYS",
}
DISULFIDE_NAMES = frozenset(k for k, v in _VARIANT_OF_NAME.items() if v == "CYX")


def variant_of_name(resname: str) -> str | None:
    """Modeller variant encoded in an input residue name (``"HSD"`` -> ``"HID"``, ``"CYX"`` -> ``"CYX"``), also
    behind an Amber terminal prefix (``"NHIE"``, ``"CCYX"``); None when the name encodes none (HIS, ASP, ...)."""
    name = resname.strip().upper()
    if name in _VARIANT_OF_NAME:
        return _VARIANT_OF_NAME[name]
    if len(name) == 4 and name[0] in "NC":
        return _VARIANT_OF_NAME.get(name[1:])
    return None


def is_disulfide_name(resname: str) -> bool:
    """True for residue names that declare a disulfide-bonded cysteine (CYX, CYS2, ...)."""
    return variant_of_name(resname) == "CYX"


def load_forcefield(forcefield="amber14", solvent="obc") -> app.ForceField:
    """OpenMM ForceField for a name in ``FORCEFIELDS`` (or a list of XML files) and a solvent model.

    Raises ``LatcpbInputError`` for an unknown name or a solvent the force field has no model for.
    """
    if isinstance(forcefield, app.ForceField):
        return forcefield
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
    raise LatcpbInputError(f"no force-field template matches residue(s) {text}: atoms missing or misnamed, or a "
                           "protonation variant the input names (e.g. LYN, GLH, ASH at a chain end) that has no "
                           "terminal template in this force field")
