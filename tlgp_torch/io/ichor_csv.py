r"""Read and write ICHOR / FEREBUS training-set CSV files ({SYSTEM}_{ATOM}_TRAINING_SET.csv).

The format: a header row, then one row per conformation. Columns named f1, f2, ... are the ALF features
(bohr for distances, radians for angles; see `tlgp_torch.features.alf_features`); every other named column is
an output property (iqa in Hartree, q00 in e, multipoles q10 ... q44s in atomic units), in any order; an
unnamed column is a row index and is ignored. Blank lines are skipped.

Example:
    >>> import pathlib, tempfile
    >>> from tlgp_torch.io import read_ichor_csv
    >>> text = ",f1,f2,f3,iqa,q00\n0,1.80,1.81,1.82,-75.4,-1.1\n1,1.90,1.70,1.80,-75.3,-1.0\n"
    >>> with tempfile.TemporaryDirectory() as tmp:
    ...     path = pathlib.Path(tmp) / "WATER_O1_TRAINING_SET.csv"
    ...     _ = path.write_text(text)
    ...     data = read_ichor_csv(path)
    >>> data.system, data.atom, tuple(data.x.shape), data.property_names
    ('WATER', 'O1', (2, 3), ['iqa', 'q00'])
"""

from __future__ import annotations

import math
import os
import pathlib
import re

import numpy as np
import pandas as pd
import torch

from tlgp_torch.data.dataset import AtomDataset
from tlgp_torch.io.atomic import atomic_write_text
from tlgp_torch.io.errors import DataFormatError

__all__ = ["read_ichor_csv", "read_validation_set", "write_ichor_csv", "parse_set_filename"]

_FEATURE = re.compile(r"f(\d+)")
# Largest magnitude accepted: the kernel squares feature differences and the likelihood squares targets, so a
# value must stay well below sqrt(float64 max) ~ 1.3e154 (FFLUX features are bohr and radians, targets Hartree / e).
MAX_ABS_VALUE = 1e150
_SET_NAME = re.compile(r"([^_]+)_([A-Za-z]{1,2}\d+)_(?:TRAINING|VALIDATION)_SET\.csv")


def parse_set_filename(path: str | os.PathLike) -> tuple[str | None, str | None]:
    """(system, atom) from a name like GLYCINE_C1_TRAINING_SET.csv, else (None, None).

    Example:
        >>> from tlgp_torch.io import parse_set_filename
        >>> parse_set_filename("data/GLYCINE_C1_VALIDATION_SET.csv"), parse_set_filename("glycine.csv")
        (('GLYCINE', 'C1'), (None, None))
    """
    m = _SET_NAME.fullmatch(pathlib.Path(path).name)
    return (m.group(1), m.group(2)) if m else (None, None)


def _missing_file(path: pathlib.Path) -> FileNotFoundError:
    if path.parent.is_dir():
        near = sorted(p.name for p in path.parent.glob("*.csv"))[:8]
        hint = f"CSV files in that folder: {', '.join(near)}" if near else "that folder has no CSV files"
    else:
        hint = f"folder {path.parent} does not exist; set TLGP_DATA_DIR or check the path"
    return FileNotFoundError(f"ICHOR CSV not found: {path} ({hint})")


def _not_utf8(path: pathlib.Path, err: UnicodeDecodeError) -> DataFormatError:
    """The first byte that is not UTF-8, as file line and column name."""
    data = path.read_bytes()
    try:
        data.decode("utf-8")
        pos = err.start  # pragma: no cover (pandas decodes in chunks; the file itself decodes)
    except UnicodeDecodeError as whole:
        pos = whole.start
    line = data.count(b"\n", 0, pos) + 1
    header = data.split(b"\n", 1)[0].decode("utf-8", "replace").strip().split(",")
    start = data.rfind(b"\n", 0, pos) + 1
    cell = data.count(b",", start, pos)
    column = header[cell].strip() if line > 1 and cell < len(header) else None
    return DataFormatError(f"byte 0x{data[pos]:02x} is not UTF-8 text (save the file as UTF-8)", path, line,
                           column)


def _to_float(raw: np.ndarray, lines: np.ndarray, names: list[str], path: pathlib.Path) -> np.ndarray:
    """Parse a [N, C] array of cell strings to float64, raising at the first bad cell in file order."""
    try:
        out = raw.astype(np.float64) if raw.size else np.zeros(raw.shape)
    except ValueError:
        out = None
    if out is not None and np.isfinite(out).all() and not (np.abs(out) > MAX_ABS_VALUE).any():
        return out
    for r in range(raw.shape[0]):
        for c in range(raw.shape[1]):
            text = str(raw[r, c]).strip()
            if not text:
                raise DataFormatError("empty cell", path, int(lines[r]), names[c])
            try:
                value = float(text)
            except ValueError:
                raise DataFormatError(f"expected a number, got {text!r}", path, int(lines[r]), names[c]) from None
            if not math.isfinite(value):
                raise DataFormatError(f"non-finite value {text!r} (NaN/inf not allowed)", path, int(lines[r]),
                                      names[c])
            if abs(value) > MAX_ABS_VALUE:
                raise DataFormatError(f"value {text!r} is out of range (|value| <= {MAX_ABS_VALUE:g}: its square "
                                      "would overflow float64 in the kernel or the likelihood)", path, int(lines[r]),
                                      names[c])
    raise AssertionError("unreachable")  # pragma: no cover


def read_ichor_csv(path: str | os.PathLike, properties: list[str] | None = None) -> AtomDataset:
    r"""Read an ICHOR CSV: features f1..fD (sorted numerically) and properties (file order, requested, or [] = none).

    Args:
        path: the CSV file; system and atom are parsed from its name when it has the ICHOR form.
        properties: property columns to keep, in this order; None keeps all in file order, [] none.

    Returns:
        An AtomDataset with x [N, D] and y [N, P] in float64, in file units (bohr / radians, Hartree, e, au),
        and the FFLUX cyclic mask (features 3, 6, 9, ...).

    Raises:
        FileNotFoundError: when path does not exist (the message lists CSVs in its folder).
        DataFormatError: naming the line and column of the first bad cell (empty, not a number, NaN / inf), a
            duplicate or missing column (f1..fD must all be present), a missing requested property, or a file
            without data rows.

    Example:
        >>> import pathlib, tempfile
        >>> from tlgp_torch.io import DataFormatError, read_ichor_csv
        >>> with tempfile.TemporaryDirectory() as tmp:
        ...     path = pathlib.Path(tmp) / "WATER_O1_TRAINING_SET.csv"
        ...     _ = path.write_text("f2,f1,iqa,q00\n1.81,1.80,-75.4,-1.1\n1.70,1.90,abc,-1.0\n")
        ...     read_ichor_csv(path, properties=["q00"]).x.tolist()       # f1 first, whatever the file order
        ...     try:
        ...         read_ichor_csv(path)
        ...     except DataFormatError as err:
        ...         print(err.line, err.column, err.message)
        [[1.8, 1.81], [1.9, 1.7]]
        3 iqa expected a number, got 'abc'
    """
    path = pathlib.Path(path)
    if not path.is_file():
        raise _missing_file(path)
    try:
        table = pd.read_csv(path, header=None, dtype=str, na_filter=False, skip_blank_lines=False,
                            encoding="utf-8-sig")
    except pd.errors.EmptyDataError:
        raise DataFormatError("empty file (expected a header row and data rows)", path) from None
    except pd.errors.ParserError as err:
        m = re.search(r"Expected (\d+) fields in line (\d+), saw (\d+)", str(err))
        if m:
            raise DataFormatError(f"row has {m.group(3)} cells, the header has {m.group(1)}", path,
                                  int(m.group(2))) from None
        m = re.search(r"line (\d+)", str(err))
        raise DataFormatError(f"malformed row: {str(err).strip()}", path, int(m.group(1)) if m else None) from None
    except UnicodeDecodeError as err:
        raise _not_utf8(path, err) from None
    raw = table.to_numpy(dtype=object)
    header = [str(h).strip() for h in raw[0]]
    body = raw[1:]
    lines = np.arange(2, len(raw) + 1)  # row r of body is file line r + 2 (header is line 1)
    keep = np.array([any(str(v).strip() for v in row) for row in body], dtype=bool)
    body, lines = body[keep], lines[keep]

    seen: set[str] = set()
    for name in header:
        if name in seen:
            raise DataFormatError(f"duplicate column name {name!r}", path, 1, name)
        seen.add(name)
    features = sorted((int(m.group(1)), i) for i, h in enumerate(header) if (m := _FEATURE.fullmatch(h)))
    if not features:
        raise DataFormatError(f"no feature columns f1, f2, ... in header {header}", path, 1)
    for expected, (k, _) in enumerate(features, start=1):
        if k != expected:
            found = ", ".join(f"f{j}" for j, _ in features)
            raise DataFormatError(f"feature columns must be f1..f{len(features)}: missing f{expected} "
                                  f"(found {found})", path, 1, f"f{expected}")
    feature_cols = [i for _, i in features]
    prop_cols = {h: i for i, h in enumerate(header) if h and i not in feature_cols}
    if not prop_cols and properties is None:
        raise DataFormatError("no property columns (expected e.g. iqa, q00; pass properties=[] for features only)",
                              path, 1)
    if properties is None:
        properties = list(prop_cols)
    else:
        properties = list(properties)
        for p in properties:
            if p not in prop_cols:
                raise DataFormatError(f"requested property {p!r} not found; available: {', '.join(prop_cols)}",
                                      path, 1, p)
    if body.shape[0] == 0:
        raise DataFormatError("no data rows after the header", path)

    cols = feature_cols + [prop_cols[p] for p in properties]
    values = _to_float(body[:, cols], lines, [header[c] for c in cols], path)
    d = len(feature_cols)
    system, atom = parse_set_filename(path)
    return AtomDataset(
        x=torch.from_numpy(np.ascontiguousarray(values[:, :d])),
        y=torch.from_numpy(np.ascontiguousarray(values[:, d:])),
        property_names=properties, system=system, atom=atom, source=path,
    )


def read_validation_set(
    path: str | os.PathLike, like: AtomDataset | None = None, properties: list[str] | None = None
) -> AtomDataset:
    r"""Read a validation CSV (all or the requested properties); with `like`, check the feature count matches.

    Args:
        path: the validation CSV.
        like: the training set it validates (only its feature count is checked).
        properties: as read_ichor_csv.

    Returns:
        An AtomDataset.

    Raises:
        DataFormatError: as read_ichor_csv, or when the feature counts differ.

    Example:
        >>> import pathlib, tempfile
        >>> from tlgp_torch.io import read_validation_set
        >>> with tempfile.TemporaryDirectory() as tmp:
        ...     path = pathlib.Path(tmp) / "WATER_O1_VALIDATION_SET.csv"
        ...     _ = path.write_text("f1,f2,f3,iqa\n1.8,1.8,1.9,-75.4\n")
        ...     read_validation_set(path).n_points
        1
    """
    data = read_ichor_csv(path, properties)
    if like is not None and data.n_features != like.n_features:
        raise DataFormatError(
            f"validation set has {data.n_features} features but training set "
            f"{like.source or '(in memory)'} has {like.n_features}", path)
    return data


def write_ichor_csv(dataset: AtomDataset, path: str | os.PathLike, index: bool = True) -> pathlib.Path:
    """Write an ICHOR CSV (optional unnamed index column, f1..fD, properties) that reads back bit-identical.

    Args:
        dataset: the data; values are written with repr (shortest round-trip form).
        path: destination file (written atomically).
        index: write an unnamed index column first, as ICHOR does.

    Returns:
        path as a pathlib.Path.

    Raises:
        ValueError: when the data contain NaN or inf.

    Example:
        >>> import pathlib, tempfile, torch
        >>> from tlgp_torch.data import AtomDataset
        >>> from tlgp_torch.io import read_ichor_csv, write_ichor_csv
        >>> gen = torch.Generator().manual_seed(0)
        >>> data = AtomDataset(x=torch.rand(4, 3, dtype=torch.float64, generator=gen),
        ...                    y=torch.rand(4, 1, dtype=torch.float64, generator=gen), property_names=["iqa"])
        >>> with tempfile.TemporaryDirectory() as tmp:
        ...     back = read_ichor_csv(write_ichor_csv(data, pathlib.Path(tmp) / "WATER_O1_TRAINING_SET.csv"))
        >>> torch.equal(back.x, data.x) and torch.equal(back.y, data.y)
        True
    """
    values = torch.cat([dataset.x, dataset.y], dim=1).detach().cpu().to(torch.float64)
    if not torch.isfinite(values).all():
        raise ValueError("dataset contains NaN or inf; the ICHOR reader would reject the file")
    header = dataset.feature_names + dataset.property_names
    rows = [("," if index else "") + ",".join(header)]
    for i, row in enumerate(values.tolist()):
        rows.append((f"{i}," if index else "") + ",".join(map(repr, row)))
    return atomic_write_text(pathlib.Path(path), "\n".join(rows) + "\n")
