"""Write an FFLUXPotential as TorchScript (.pt) or torch.export (.pt2); both load with plain torch."""
from __future__ import annotations

import json
import os
import pathlib

import torch
from torch import nn

from tlgp_torch.export.potential import FFLUXPotential
from tlgp_torch.io.atomic import atomic_write

__all__ = ["FORMATS", "PROGRAMS", "load_potential", "potential_metadata", "save_potential"]

FORMATS = {".pt": "torchscript", ".pt2": "export"}
METADATA_FILE = "tlgp_potential.json"
PROGRAMS = {  # what a saved file's forward computes (a TorchScript file has every method; torch.export one)
    "forward": "positions [F, N, 3] -> (energy [F], atomic energies [F, N], charges [F, N])",
    "forces": "positions [F, N, 3] -> (energy [F], forces [F, N, 3], atomic energies [F, N], charges [F, N] = NaN)",
}


class ForcesProgram(nn.Module):
    """forward = potential.evaluate(positions) (analytic forces, no charges): the module torch.export saves for
    program="forces", so that a .pt2 gives forces without autograd."""

    def __init__(self, potential: FFLUXPotential) -> None:
        super().__init__()
        self.potential = potential

    def forward(self, positions: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor]:
        """(energy [F], forces [F, N, 3], atomic energies [F, N], charges [F, N] = NaN) at positions [F, N, 3]."""
        return self.potential.evaluate(positions, False)


def potential_metadata(potential: FFLUXPotential, program: str = "forward") -> dict:
    """Units, atoms and properties of a potential and the saved program (stored beside it in both formats).

    Example:
        >>> import torch
        >>> from tlgp_torch.io.toy import water_stand_in_models
        >>> models = water_stand_in_models()          # O1, H2, H3 x (iqa, q00): small stand-ins
        >>> from tlgp_torch.export import FFLUXPotential
        >>> from tlgp_torch.export.saving import potential_metadata
        >>> meta = potential_metadata(FFLUXPotential(models))
        >>> meta["atoms"], meta["numbers"], meta["length_unit"], meta["energy_unit"]
        (['O1', 'H2', 'H3'], [8, 1, 1], 'angstrom', 'eV')
    """
    return {"format": "tlgp_torch.FFLUXPotential/1", "length_unit": potential.length_unit,
            "energy_unit": potential.energy_unit, "charge_unit": "e", "numbers": potential.numbers.tolist(),
            "atoms": potential.atom_names, "properties": potential.properties,
            "dtype": str(potential.x_train.dtype).removeprefix("torch."), "program": program,
            "forward": PROGRAMS[program]}


def save_potential(potential: FFLUXPotential, path: str | os.PathLike, program: str = "forward") -> pathlib.Path:
    """Save by suffix: .pt = torch.jit.script (load: torch.jit.load; forward, evaluate and energy_and_forces),
    .pt2 = torch.export (torch.export.load) of one program: "forward" (energy, atomic energies, charges;
    forces by autograd) or "forces" (ForcesProgram: energy, analytic forces, atomic energies).

    Both files carry potential_metadata as the extra file tlgp_potential.json and need only torch to load; the
    .pt2 program takes positions [F, N, 3] with any number of frames F (tracing it takes seconds).

    Args:
        potential: a complete potential (an energy model of every atom).
        path: destination with suffix .pt or .pt2 (written atomically; folders are created).
        program: the .pt2's program, "forward" or "forces" (see PROGRAMS); a .pt holds every method.

    Returns:
        path as a pathlib.Path.

    Raises:
        ValueError: for another suffix or an incomplete potential.

    Example:
        >>> import torch
        >>> from tlgp_torch.io.toy import water_stand_in_models
        >>> models = water_stand_in_models()          # O1, H2, H3 x (iqa, q00): small stand-ins
        >>> import pathlib, tempfile
        >>> from tlgp_torch.export import FFLUXPotential, load_potential, save_potential
        >>> positions = torch.tensor([[[0.0, 0.0, 0.117], [0.0, 0.757, -0.469], [0.0, -0.757, -0.469]]],
        ...                          dtype=torch.float64)                    # one frame, angstrom
        >>> with tempfile.TemporaryDirectory() as tmp:
        ...     path = save_potential(FFLUXPotential(models), pathlib.Path(tmp) / "WATER.pt")
        ...     module, meta = load_potential(path)                         # plain torch from here on
        >>> energy, atomic_energies, charges = module(positions)
        >>> energy.shape, atomic_energies.shape, meta["energy_unit"]
        (torch.Size([1]), torch.Size([1, 3]), 'eV')
    """
    path = pathlib.Path(path)
    kind = FORMATS.get(path.suffix)
    if kind is None:
        raise ValueError(f"{path}: use the suffix .pt (TorchScript) or .pt2 (torch.export)")
    if program not in PROGRAMS:
        raise ValueError(f"program must be one of {sorted(PROGRAMS)}, got {program!r}")
    if not potential.complete:
        raise ValueError("only a complete potential (an energy model of every atom) can be saved")
    if kind == "torchscript":
        program = "forward"  # the scripted module has every method; its forward is the forward
    extra = {METADATA_FILE: json.dumps(potential_metadata(potential, program), indent=1)}
    path.parent.mkdir(parents=True, exist_ok=True)
    if kind == "torchscript":
        scripted = torch.jit.script(potential.cpu())
        atomic_write(path, lambda fh: torch.jit.save(scripted, fh, _extra_files=extra))
    else:
        example = torch.zeros(2, potential.n_atoms, 3, dtype=potential.x_train.dtype)
        example[:] = _sample_positions(potential)
        frames = torch.export.Dim("frames", min=1)
        module = potential.cpu() if program == "forward" else ForcesProgram(potential.cpu())
        potential.exporting = True  # data-dependent branches (wrap, exact fallback) as torch.cond
        try:
            exported = torch.export.export(module, (example,), dynamic_shapes={"positions": {0: frames}})
        finally:
            potential.exporting = False
        atomic_write(path, lambda fh: torch.export.save(exported, fh, extra_files=extra))
    return path


def load_potential(path: str | os.PathLike, map_location: str | torch.device = "cpu"):
    """(callable module, metadata) from a .pt or .pt2 file written by save_potential.

    The module maps positions [F, N, 3] (metadata["length_unit"]) to (energy [F], atomic energies [F, N],
    charges [F, N]) in metadata["energy_unit"] and e.

    Args:
        path: a .pt (TorchScript) or .pt2 (torch.export) file.
        map_location: device for a TorchScript module.

    Raises:
        FileNotFoundError: when path does not exist.
        ValueError: for another suffix.

    Example:
        >>> from tlgp_torch.export import load_potential
        >>> try:
        ...     load_potential("missing.pt")
        ... except FileNotFoundError as err:
        ...     print(err)
        potential file not found: missing.pt

    See save_potential for a round trip.
    """
    path = pathlib.Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"potential file not found: {path}")
    kind = FORMATS.get(path.suffix)
    extra = {METADATA_FILE: ""}
    if kind == "torchscript":
        module = torch.jit.load(str(path), map_location=map_location, _extra_files=extra)
    elif kind == "export":
        module = torch.export.load(str(path), extra_files=extra).module()
    else:
        raise ValueError(f"{path}: expected a .pt (TorchScript) or .pt2 (torch.export) file")
    return module, json.loads(extra[METADATA_FILE] or "{}")


def _sample_positions(potential: FFLUXPotential) -> torch.Tensor:
    """A non-degenerate geometry for tracing (atoms on a helix: no three collinear)."""
    k = torch.arange(potential.n_atoms, dtype=torch.float64)
    return torch.stack([torch.cos(k), torch.sin(k), 0.3 * k], dim=-1)
