"""Read, write and evaluate FEREBUS v7 `.model` files (the GPR models FFLUX / DL_FFLUX load).

A .model file is plain text: `# key value` metadata comment lines (program, version, nugget, likelihood, ...),
then the sections [system] (name, atom, property, ALF i j k with 1-based atom indices), [dimensions]
(number_of_atoms, number_of_features, number_of_training_points), [mean] (type constant, value), [kernels]
(number_of_kernels 1, composition k1, prefactor), [kernel.k1] (type rbf | rbf-cyclic, number_of_dimensions,
active_dimensions 1..D, theta), [training_data] (units.x, units.y, scaling.x/y none), [training_data.x] (one row
of D features per point), [training_data.y] and [weights] (one value per point). Numbers may use Fortran
exponents (1.0D-3). The model predicts

    y(x) = mean + prefactor * sum_i w_i exp(-sum_d theta_d delta_d^2),

with delta_d wrapped into [-pi, pi] on features 3, 6, 9, ... for rbf-cyclic; x in bohr / radians, y in Hartree
for energies. The writer adds what the FFLUX engine's reader needs and FEREBUS 7.2.0 omits: the `prefactor`
line and a `# end` line after [weights].

Example:
    >>> import pathlib, tempfile, torch
    >>> from tlgp_torch.io import FerebusModel, ferebus_model_filename, read_ferebus_model, write_ferebus_model
    >>> x = torch.tensor([[1.80, 1.81, 1.82], [1.90, 1.70, 1.80]], dtype=torch.float64)
    >>> model = FerebusModel(system="WATER", atom="O1", property="iqa", alf=(1, 2, 3), n_atoms=3,
    ...                      kernel_type="rbf-cyclic", theta=torch.tensor([1.0, 1.0, 2.0], dtype=torch.float64),
    ...                      mean=-75.0, x=x, y=torch.tensor([-75.4, -75.3], dtype=torch.float64),
    ...                      weights=torch.tensor([0.1, -0.2], dtype=torch.float64))
    >>> with tempfile.TemporaryDirectory() as tmp:
    ...     path = write_ferebus_model(model, pathlib.Path(tmp) / ferebus_model_filename("WATER", "iqa", "O1"))
    ...     lines = path.read_text().splitlines()
    ...     back = read_ferebus_model(path)
    >>> path.name, lines[-1]
    ('WATER_iqa_O1.model', '# end')
    >>> torch.equal(back.weights, model.weights), back.alf
    (True, (1, 2, 3))
"""

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
from tlgp_torch.kernels.formula import direct_sq_dist
from tlgp_torch.version import __version__

__all__ = ["FerebusModel", "read_ferebus_model", "write_ferebus_model", "ferebus_model_filename"]

_KEY_SECTIONS = ("system", "dimensions", "mean", "kernels", "kernel.k1", "training_data")
_DATA_SECTIONS = ("training_data.x", "training_data.y", "weights")
_OWN_METADATA = ("program", "version", "nugget", "likelihood")
_KERNEL_TYPES = ("rbf", "rbf-cyclic")
_META = re.compile(r"([^\s=]+)\s*(?:=\s*|\s+)(\S.*)")  # "# key value" or "# key = value"


def ferebus_model_filename(system: str, property: str, atom: str) -> str:
    """FFLUX model file name {SYSTEM}_{property}_{ATOM}.model (underscores removed from the system).

    Example:
        >>> from tlgp_torch.io import ferebus_model_filename
        >>> ferebus_model_filename("N_METHYL_ACETAMIDE", "q00", "C1")
        'NMETHYLACETAMIDE_q00_C1.model'
    """
    return f"{system.replace('_', '')}_{property}_{atom}.model"


def default_units_x(n_features: int) -> list[str]:
    """ALF feature units: radians at 1-based indices 3, 6, 9, ... and 5, 8, 11, ... (angles), else bohr.

    Example:
        >>> default_units_x(6)
        ['bohr', 'bohr', 'radians', 'bohr', 'radians', 'radians']
    """
    return ["radians" if k == 3 or (k > 3 and k % 3 != 1) else "bohr" for k in range(1, n_features + 1)]


@dataclass
class FerebusModel:
    """One FFLUX GPR model: y(x) = mean + prefactor * sum_i w_i exp(-sum_d theta_d delta_d^2).

    delta_d = x_d - x_i,d, wrapped into [-pi, pi] on features 3, 6, 9, ... when kernel_type is "rbf-cyclic".

    Attributes:
        system: system name (one word, e.g. "WATER").
        atom: atom name, element symbol + 1-based index (e.g. "O1").
        property: property name (iqa, q00, q10, ...).
        alf: 1-based atom indices (C, X, P) of the atomic local frame.
        n_atoms: atoms in the molecule.
        kernel_type: "rbf" or "rbf-cyclic".
        theta: inverse squared length scales [D] (bohr^-2 / rad^-2).
        mean: constant mean (y units).
        x: training features [N, D] (bohr / radians).
        y: training targets [N] (Hartree for energies; FFLUX does not read them).
        weights: w [N] = R^-1 (y - mean 1).
        nugget: nugget of R (metadata only), or None.
        likelihood: log-likelihood of the fit (metadata only), or None.
        metadata: other `# key value` metadata lines.
        units_x: unit of each feature (default from the ALF layout: bohr / radians).
        units_y: unit of y ("Ha" by default).
        prefactor: factor on the kernel sum (1.0; the FFLUX reader needs the line).

    Raises:
        ValueError: for an ALF without 3 atoms, an unknown kernel_type or inconsistent shapes.

    Example:
        >>> import torch
        >>> from tlgp_torch.io import FerebusModel
        >>> model = FerebusModel(system="WATER", atom="O1", property="iqa", alf=(1, 2, 3), n_atoms=3,
        ...                      kernel_type="rbf", theta=torch.ones(3, dtype=torch.float64), mean=-75.0,
        ...                      x=torch.zeros(1, 3, dtype=torch.float64), y=torch.zeros(1, dtype=torch.float64),
        ...                      weights=torch.tensor([2.0], dtype=torch.float64))
        >>> model.predict(torch.tensor([[0.0, 0.0, 0.0], [1.0, 0.0, 0.0]], dtype=torch.float64))
        tensor([-73.0000, -74.2642], dtype=torch.float64)
    """

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
        """Predicted property [M] at points x [M, D] (bohr / radians), in chunks over M to bound memory.

        Args:
            x: points [M, D].
            chunk_elements: bound on the elements of one [m, N, D] difference tensor.

        Raises:
            ValueError: unless x is [M, D].
        """
        x = torch.as_tensor(x, dtype=self.x.dtype, device=self.x.device)
        if x.dim() != 2 or x.shape[1] != self.n_features:
            raise ValueError(f"x must be [M, {self.n_features}], got {tuple(x.shape)}")
        cyclic = cyclic_feature_mask(self.n_features).to(x.device) if self.kernel_type == "rbf-cyclic" else None
        theta = self.theta.to(x)
        chunk = max(1, chunk_elements // max(1, self.n_points * self.n_features))
        out = []
        for start in range(0, x.shape[0], chunk):
            k = torch.exp(-direct_sq_dist(x[start:start + chunk], self.x, theta, cyclic))  # [m, N]
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
    """Parse a FEREBUS v7 .model file (Fortran-style numbers, optional [kernels] prefactor line).

    Args:
        path: the .model file (format in the module docstring).

    Returns:
        A FerebusModel; the `# nugget` and `# likelihood` metadata become its nugget and likelihood.

    Raises:
        FileNotFoundError: when path does not exist.
        DataFormatError: naming the line of the first problem: unknown, repeated or missing section, missing key,
            a value that is not a number, a row with the wrong number of features, counts that disagree with
            [dimensions], or an unsupported mean / kernel / scaling.

    Example:
        >>> import pathlib, tempfile
        >>> from tlgp_torch.io import read_ferebus_model
        >>> text = '''# [metadata]
        ... # program FEREBUS
        ... # nugget 1.0D-10
        ... [system]
        ... name WATER
        ... atom O1
        ... property iqa
        ... ALF 1 2 3
        ... [dimensions]
        ... number_of_atoms 3
        ... number_of_features 3
        ... number_of_training_points 2
        ... [mean]
        ... type constant
        ... value -7.5D+01
        ... [kernels]
        ... number_of_kernels 1
        ... composition k1
        ... [kernel.k1]
        ... type rbf-cyclic
        ... number_of_dimensions 3
        ... active_dimensions 1 2 3
        ... theta 1.0 2.0 0.5
        ... [training_data]
        ... [training_data.x]
        ... 1.80 1.81 1.82
        ... 1.90 1.70 1.80
        ... [training_data.y]
        ... -75.4
        ... -75.3
        ... [weights]
        ... 0.1
        ... -0.2
        ... '''
        >>> with tempfile.TemporaryDirectory() as tmp:
        ...     path = pathlib.Path(tmp) / "WATER_iqa_O1.model"
        ...     _ = path.write_text(text)
        ...     model = read_ferebus_model(path)
        >>> model.alf, model.kernel_type, model.mean, model.nugget, model.prefactor, tuple(model.x.shape)
        ((1, 2, 3), 'rbf-cyclic', -75.0, 1e-10, 1.0, (2, 3))
    """
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
    """Write a .model file FFLUX can read (prefactor line, '# end' trailer), round-trip exact.

    Numbers are written with repr (shortest round-trip form), so read_ferebus_model gives back the same bits.

    Args:
        model: the model; system, atom and property must be single words.
        path: destination file (written atomically); name it with ferebus_model_filename for FFLUX.
        program: the `# program` metadata line.
        version: the `# version` metadata line (default: this package's version; "" omits the line).

    Returns:
        path as a pathlib.Path.

    Raises:
        ValueError: when system, atom or property is empty or contains whitespace.

    Example:
        >>> import pathlib, tempfile, torch
        >>> from tlgp_torch.io import FerebusModel, write_ferebus_model
        >>> model = FerebusModel(system="WATER", atom="O1", property="iqa", alf=(1, 2, 3), n_atoms=3,
        ...                      kernel_type="rbf", theta=torch.ones(3, dtype=torch.float64), mean=-75.0,
        ...                      x=torch.zeros(1, 3, dtype=torch.float64), y=torch.zeros(1, dtype=torch.float64),
        ...                      weights=torch.tensor([2.0], dtype=torch.float64))
        >>> with tempfile.TemporaryDirectory() as tmp:
        ...     text = write_ferebus_model(model, pathlib.Path(tmp) / "WATER_iqa_O1.model").read_text()
        >>> [line for line in text.splitlines() if line.startswith(("ALF", "prefactor", "theta"))]
        ['ALF 1 2 3', 'prefactor 1.0', 'theta 1.0 1.0 1.0']
    """
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
