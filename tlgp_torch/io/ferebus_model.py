"""Read, write and evaluate FEREBUS v7 `.model` files (the GPR models FFLUX / DL_FFLUX load)."""

from __future__ import annotations

import math
import os
import pathlib
import re
from dataclasses import dataclass, field

import torch

from tlgp_torch.data.dataset import cyclic_feature_mask
from tlgp_torch.io.atomic import atomic_write_text
from tlgp_torch.io.errors import DataFormatError
from tlgp_torch.version import __version__

__all__ = ["FerebusModel", "read_ferebus_model", "write_ferebus_model", "ferebus_model_filename"]

_KEY_SECTIONS = ("system", "dimensions", "mean", "kernels", "kernel.k1", "training_data")
_DATA_SECTIONS = ("training_data.x", "training_data.y", "weights")
_OWN_METADATA = ("program", "version", "nugget", "likelihood")
_KERNEL_TYPES = ("rbf", "rbf-cyclic")
_META = re.compile(r"([^\s=]+)\s*(?:=\s*|\s+)(\S.*)")  # "# key value" or "# key = value"


def ferebus_model_filename(system: str, property: str, atom: str) -> str:
    """FFLUX model file name {SYSTEM}_{property}_{ATOM}.model (underscores removed from the system)."""
    return f"{system.replace('_', '')}_{property}_{atom}.model"


def default_units_x(n_features: int) -> list[str]:
    """ALF feature units: radians at 1-based indices 3, 6, 9, ... and 5, 8, 11, ... (angles), else bohr."""
    return ["radians" if k == 3 or (k > 3 and k % 3 != 1) else "bohr" for k in range(1, n_features + 1)]


@dataclass
class FerebusModel:
    """One FFLUX GPR model: y(x) = mean + prefactor * sum_i w_i exp(-sum_d theta_d delta_d^2)."""

    system: str
    atom: str
    property: str
    alf: tuple[int, int, int]
    n_atoms: int
    kernel_type: str
    theta: torch.Tensor
    mean: float
    x: torch.Tensor
    y: torch.Tensor
    weights: torch.Tensor
    nugget: float | None = None
    likelihood: float | None = None
    metadata: dict[str, str] = field(default_factory=dict)
    units_x: list[str] | None = None
    units_y: str | None = "Ha"
    prefactor: float = 1.0

    def __post_init__(self) -> None:
        self.alf = tuple(int(a) for a in self.alf)
        if len(self.alf) != 3:
            raise ValueError(f"alf must have 3 atom indices, got {self.alf}")
        if self.kernel_type not in _KERNEL_TYPES:
            raise ValueError(f"kernel_type must be one of {_KERNEL_TYPES}, got {self.kernel_type!r}")
        n, d = self.x.shape if self.x.dim() == 2 else (-1, -1)
        if d < 0 or self.theta.shape != (d,) or self.y.shape != (n,) or self.weights.shape != (n,):
            raise ValueError(f"inconsistent shapes: x {tuple(self.x.shape)}, theta {tuple(self.theta.shape)}, "
                             f"y {tuple(self.y.shape)}, weights {tuple(self.weights.shape)}")
        if self.units_x is not None and len(self.units_x) != d:
            raise ValueError(f"units_x has {len(self.units_x)} entries for {d} features")
        self.mean = float(self.mean)
        self.prefactor = float(self.prefactor)

    @property
    def n_features(self) -> int:
        """Number of features D."""
        return self.x.shape[1]

    @property
    def n_points(self) -> int:
        """Number of training points N."""
        return self.x.shape[0]

    def predict(self, x: torch.Tensor, chunk_elements: int = 1 << 23) -> torch.Tensor:
        """Predicted property [M] at points x [M, D], in chunks over M to bound memory."""
        x = torch.as_tensor(x, dtype=self.x.dtype, device=self.x.device)
        if x.dim() != 2 or x.shape[1] != self.n_features:
            raise ValueError(f"x must be [M, {self.n_features}], got {tuple(x.shape)}")
        cyclic = cyclic_feature_mask(self.n_features).to(x.device) if self.kernel_type == "rbf-cyclic" else None
        theta = self.theta.to(x)
        chunk = max(1, chunk_elements // max(1, self.n_points * self.n_features))
        out = []
        for start in range(0, x.shape[0], chunk):
            delta = x[start:start + chunk, None, :] - self.x[None, :, :]  # [m, N, D]
            if cyclic is not None:
                wrapped = torch.sign(delta) * (torch.remainder(delta.abs() + math.pi, 2 * math.pi) - math.pi)
                delta = torch.where(cyclic, wrapped, delta)
            k = torch.exp(-(delta.square() * theta).sum(-1))  # [m, N]
            out.append(self.mean + self.prefactor * (k @ self.weights.to(x)))
        return torch.cat(out) if out else x.new_zeros(0)


def _number(token: str, path: pathlib.Path, line: int | None) -> float:
    try:
        value = float(token.replace("D", "E").replace("d", "e"))
    except ValueError:
        raise DataFormatError(f"expected a number, got {token!r}", path, line) from None
    if not math.isfinite(value):
        raise DataFormatError(f"expected a finite number, got {token!r}", path, line)
    return value


def read_ferebus_model(path: str | os.PathLike) -> FerebusModel:
    """Parse a FEREBUS v7 .model file (Fortran-style numbers, optional [kernels] prefactor line)."""
    path = pathlib.Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"FEREBUS model file not found: {path}")
    metadata: dict[str, str] = {}
    keys: dict[str, dict[str, tuple[list[str], int]]] = {s: {} for s in _KEY_SECTIONS}
    rows: dict[str, list[tuple[int, list[str]]]] = {s: [] for s in _DATA_SECTIONS}
    starts: dict[str, int] = {}
    section = None
    for lineno, raw in enumerate(path.read_text(encoding="utf-8").splitlines(), start=1):
        text = raw.strip()
        if not text:
            continue
        if text.startswith("#"):
            body = text[1:].strip()
            m = _META.fullmatch(body)
            if section is None and m and not body.startswith("["):
                metadata[m.group(1)] = m.group(2)
            continue
        if text.startswith("["):
            section = text.strip("[]").strip()
            if section not in keys and section not in rows:
                raise DataFormatError(f"unknown section [{section}]", path, lineno)
            if section in starts:
                raise DataFormatError(f"section [{section}] appears twice", path, lineno)
            starts[section] = lineno
        elif section in keys:
            word, *values = text.split()
            keys[section].setdefault(word, (values, lineno))
        elif section in rows:
            rows[section].append((lineno, text.split()))
        else:
            raise DataFormatError(f"unexpected line before the first section: {text[:40]!r}", path, lineno)

    def get(sec: str, key: str, count: int | None = 1) -> list[str]:
        if key not in keys[sec]:
            raise DataFormatError(f"missing '{key}' in [{sec}]", path, starts.get(sec))
        values, lineno = keys[sec][key]
        if count is not None and len(values) != count:
            raise DataFormatError(f"'{key}' needs {count} value(s), got {len(values)}", path, lineno)
        return values

    def num(sec: str, key: str) -> float:
        return _number(get(sec, key)[0], path, keys[sec][key][1])

    def integer(sec: str, key: str) -> int:
        value = num(sec, key)
        if value != int(value):
            raise DataFormatError(f"'{key}' must be an integer", path, keys[sec][key][1])
        return int(value)

    for sec in _KEY_SECTIONS + _DATA_SECTIONS:
        if sec not in starts:
            raise DataFormatError(f"missing section [{sec}]", path)
    d = integer("dimensions", "number_of_features")
    n = integer("dimensions", "number_of_training_points")
    if get("mean", "type")[0] != "constant":
        raise DataFormatError("only 'type constant' means are supported", path, keys["mean"]["type"][1])
    if integer("kernels", "number_of_kernels") != 1 or get("kernels", "composition")[0] != "k1":
        raise DataFormatError("only a single kernel 'composition k1' is supported", path, starts["kernels"])
    prefactor = num("kernels", "prefactor") if "prefactor" in keys["kernels"] else 1.0
    kernel_type = get("kernel.k1", "type")[0]
    if kernel_type not in _KERNEL_TYPES:
        raise DataFormatError(f"unsupported kernel type {kernel_type!r}", path, keys["kernel.k1"]["type"][1])
    if integer("kernel.k1", "number_of_dimensions") != d:
        raise DataFormatError(f"number_of_dimensions differs from number_of_features {d}", path,
                              keys["kernel.k1"]["number_of_dimensions"][1])
    if get("kernel.k1", "active_dimensions", d) != [str(k) for k in range(1, d + 1)]:
        raise DataFormatError(f"active_dimensions must be 1..{d}", path, keys["kernel.k1"]["active_dimensions"][1])
    theta_line = keys["kernel.k1"].get("theta", (None, starts["kernel.k1"]))[1]
    theta = [_number(t, path, theta_line) for t in get("kernel.k1", "theta", d)]
    negative = [k for k, t in enumerate(theta, start=1) if t < 0]
    if negative:
        raise DataFormatError(f"theta must be >= 0 (theta = 1 / (2 l^2)); feature {negative[0]} has "
                              f"{theta[negative[0] - 1]!r}", path, theta_line)
    for key in ("scaling.x", "scaling.y"):
        if key in keys["training_data"] and get("training_data", key)[0] != "none":
            raise DataFormatError(f"{key} must be 'none'", path, keys["training_data"][key][1])
    units_x = get("training_data", "units.x", d) if "units.x" in keys["training_data"] else None
    units_y = get("training_data", "units.y")[0] if "units.y" in keys["training_data"] else None

    x_rows = rows["training_data.x"]
    for lineno, tokens in x_rows:
        if len(tokens) != d:
            raise DataFormatError(f"expected {d} feature values, got {len(tokens)}", path, lineno)
    if len(x_rows) != n:
        raise DataFormatError(f"[training_data.x] has {len(x_rows)} rows, expected {n}", path,
                              x_rows[n][0] if len(x_rows) > n else starts["training_data.x"])

    def column(sec: str) -> list[float]:
        values = [_number(t, path, lineno) for lineno, tokens in rows[sec] for t in tokens]
        if len(values) != n:
            raise DataFormatError(f"[{sec}] has {len(values)} values, expected {n}", path, starts[sec])
        return values

    alf = get("system", "ALF", 3)
    nugget, likelihood = metadata.pop("nugget", None), metadata.pop("likelihood", None)
    f64 = torch.float64
    return FerebusModel(
        system=get("system", "name")[0], atom=get("system", "atom")[0], property=get("system", "property")[0],
        alf=tuple(int(_number(a, path, keys["system"]["ALF"][1])) for a in alf),
        n_atoms=integer("dimensions", "number_of_atoms"), kernel_type=kernel_type,
        theta=torch.tensor(theta, dtype=f64), mean=num("mean", "value"),
        x=torch.tensor([[_number(t, path, ln) for t in tk] for ln, tk in x_rows], dtype=f64).reshape(n, d),
        y=torch.tensor(column("training_data.y"), dtype=f64),
        weights=torch.tensor(column("weights"), dtype=f64),
        nugget=None if nugget is None else _number(nugget, path, None),
        likelihood=None if likelihood is None else _number(likelihood, path, None),
        metadata=metadata, units_x=units_x, units_y=units_y, prefactor=prefactor,
    )


def _fmt(value: float) -> str:
    return repr(float(value))


def write_ferebus_model(
    model: FerebusModel, path: str | os.PathLike, program: str = "tlgp_torch", version: str | None = None
) -> pathlib.Path:
    """Write a .model file FFLUX can read (prefactor line, '# end' trailer), round-trip exact."""
    for name in ("system", "atom", "property"):
        if not getattr(model, name) or any(c.isspace() for c in getattr(model, name)):
            raise ValueError(f"model.{name} must be one non-empty word, got {getattr(model, name)!r}")
    if version is None:
        version = __version__
    d, n = model.n_features, model.n_points
    out = ["# [metadata]", f"# program {program}"]
    out += [f"# version {version}"] if version else []
    out += [f"# nugget {_fmt(model.nugget)}"] if model.nugget is not None else []
    out += [f"# likelihood {_fmt(model.likelihood)}"] if model.likelihood is not None else []
    out += [f"# {k} = {v}" for k, v in model.metadata.items() if k not in _OWN_METADATA]
    out += ["", "[system]", f"name {model.system}", f"atom {model.atom}", f"property {model.property}",
            "ALF " + " ".join(map(str, model.alf)),
            "", "[dimensions]", f"number_of_atoms {model.n_atoms}", f"number_of_features {d}",
            f"number_of_training_points {n}",
            "", "[mean]", "type constant", f"value {_fmt(model.mean)}",
            "", "[kernels]", "number_of_kernels 1", "composition k1", f"prefactor {_fmt(model.prefactor)}",
            "", "[kernel.k1]", f"type {model.kernel_type}", f"number_of_dimensions {d}",
            "active_dimensions " + " ".join(str(k) for k in range(1, d + 1)),
            "theta " + " ".join(map(_fmt, model.theta.tolist())),
            "", "[training_data]", "units.x " + " ".join(model.units_x or default_units_x(d)),
            f"units.y {model.units_y or 'Ha'}", "scaling.x none", "scaling.y none",
            "", "[training_data.x]"]
    out += [" ".join(map(_fmt, row)) for row in model.x.tolist()]
    out += ["", "[training_data.y]"] + [_fmt(v) for v in model.y.tolist()]
    out += ["", "[weights]"] + [_fmt(v) for v in model.weights.tolist()]
    out += ["", "# end"]
    return atomic_write_text(pathlib.Path(path), "\n".join(out) + "\n")
