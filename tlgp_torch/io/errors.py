"""Error type for malformed FFLUX data files (ICHOR CSVs, FEREBUS .model files)."""

from __future__ import annotations

import os

__all__ = ["DataFormatError"]


class DataFormatError(ValueError):
    """A data file is malformed; carries the path, 1-based line number and column name when known.

    A ValueError whose message starts with where the problem is: "path, line L, column 'C': message".

    Args:
        message: what is wrong and what was expected.
        path: the file.
        line: 1-based line number (the header of a CSV is line 1).
        column: column (CSV) name.

    Example:
        >>> from tlgp_torch.io import DataFormatError
        >>> err = DataFormatError("expected a number, got 'abc'", "WATER_O1_TRAINING_SET.csv", 3, "f2")
        >>> str(err)
        "WATER_O1_TRAINING_SET.csv, line 3, column 'f2': expected a number, got 'abc'"
        >>> isinstance(err, ValueError), err.line
        (True, 3)
    """

    def __init__(
        self,
        message: str,
        path: str | os.PathLike | None = None,
        line: int | None = None,
        column: str | None = None,
    ) -> None:
        self.message = message
        self.path = path
        self.line = line
        self.column = column
        super().__init__(str(self))

    def __str__(self) -> str:
        where = []
        if self.path is not None:
            where.append(os.fspath(self.path))
        if self.line is not None:
            where.append(f"line {self.line}")
        if self.column is not None:
            where.append(f"column {self.column!r}")
        return f"{', '.join(where)}: {self.message}" if where else self.message
