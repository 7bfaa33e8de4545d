"""The configuration reference (docs/configuration.md), generated from the config dataclasses.

Every TOML key of a training config (`tlgp train | compare | export | submit | merge`) and of a data-generation
config (`tlgp data generate`) is a field of a dataclass; its type comes from the field's annotation, its default
from the field, and its meaning from, in this order:

1. ``field(metadata={"help": "..."})``;
2. the class docstring's ``Attributes:`` (or ``Args:``) section, Google style: ``name: meaning`` or
   ``name (type): meaning``, continuation lines indented deeper;
3. the comment on the field's line (``nugget: float = 1e-10  # meaning``), or the comment lines directly
   above the field.

A field with none of these is documented as "(undocumented)", which tests/test_config_reference.py refuses.

Regenerate the page after changing a config dataclass (``--out``, not ``>``: importing gpytorch with pykeops
installed prints a KeOps warning on stdout on machines without CUDA)::

    python -m tlgp_torch.config.reference --out docs/configuration.md

Example:
    >>> from tlgp_torch.config.reference import configuration_markdown, field_help
    >>> from tlgp_torch.optim.stopping import StoppingRule
    >>> "patience" in field_help(StoppingRule)
    True
    >>> configuration_markdown().startswith("# Configuration reference")
    True
"""
from __future__ import annotations

import argparse
import ast
import dataclasses
import inspect
import io
import math
import pathlib
import re
import sys
import textwrap
import tokenize
import typing
from dataclasses import dataclass
from typing import Any, Callable

from tlgp_torch.config.experiment import DL_KEYS, MODEL_KEYS, TL_KEYS, TRAIN_KEYS, Config, DataConfig, TrainConfig
from tlgp_torch.config.toml import type_name
from tlgp_torch.generation.config import GenerationConfig, MoleculeSpec, SamplingSpec, SplitSpec
from tlgp_torch.generation.xtb import QMSettings
from tlgp_torch.optim.stopping import StoppingRule
from tlgp_torch.runtime.submit import SubmitConfig
from tlgp_torch.training.direct import DirectTrainer
from tlgp_torch.training.iterative import IterativeSettings
from tlgp_torch.training.settings import FitSettings
from tlgp_torch.training.transfer import TransferTrainer

__all__ = ["REGENERATE", "KeyDoc", "TableDoc", "configuration_markdown", "field_help", "tables"]

REGENERATE = "python -m tlgp_torch.config.reference --out docs/configuration.md"
UNDOCUMENTED = "(undocumented)"
_SECTION = re.compile(r"^(Attributes|Args|Arguments|Fields|Parameters):\s*$")
_ENTRY = re.compile(r"^(\w+)\s*(\([^)]*\))?\s*:\s*(.*)$")


@dataclass(frozen=True)
class KeyDoc:
    """One TOML key: its name, type, default (TOML syntax, or a note) and meaning."""

    key: str
    type: str
    default: str
    meaning: str


@dataclass(frozen=True)
class TableDoc:
    """One TOML table: its name, which dataclass it fills, an introduction and its keys."""

    name: str
    source: str
    intro: str
    keys: tuple[KeyDoc, ...]


def _docstring_help(cls: type) -> dict[str, str]:
    """name -> meaning from the Attributes/Args section of the class docstring (Google style)."""
    doc = inspect.cleandoc(cls.__doc__ or "")
    out: dict[str, str] = {}
    in_section, name, indent = False, None, 0
    for line in doc.splitlines():
        stripped = line.strip()
        if _SECTION.match(stripped) and not line.startswith(" "):
            in_section, name = True, None
            continue
        if not in_section:
            continue
        if stripped and not line.startswith(" "):  # the next section or paragraph ends this one
            in_section, name = False, None
            continue
        if not stripped:
            name = None
            continue
        depth = len(line) - len(line.lstrip())
        entry = _ENTRY.match(stripped)
        if entry and (name is None or depth <= indent):
            name, indent = entry.group(1), depth
            out[name] = entry.group(3).strip()
        elif name is not None and depth > indent:
            out[name] = f"{out[name]} {stripped}".strip()
    return out


def _comment_help(cls: type) -> dict[str, str]:
    """name -> meaning from the comment on each field's line, or the comment lines directly above it."""
    try:
        source = textwrap.dedent(inspect.getsource(cls))
    except (OSError, TypeError):  # no source (e.g. a frozen build): comments are not available
        return {}
    comments: dict[int, str] = {}
    code_lines: set[int] = set()
    for tok in tokenize.generate_tokens(io.StringIO(source).readline):
        if tok.type == tokenize.COMMENT:
            comments[tok.start[0]] = tok.string.lstrip("#").strip()
        elif tok.type not in (tokenize.NL, tokenize.NEWLINE, tokenize.INDENT, tokenize.DEDENT, tokenize.ENDMARKER):
            code_lines.update(range(tok.start[0], tok.end[0] + 1))
    out: dict[str, str] = {}
    body = ast.parse(source).body[0].body  # type: ignore[attr-defined]
    for node in body:
        if not (isinstance(node, ast.AnnAssign) and isinstance(node.target, ast.Name)):
            continue
        trailing = [comments[i] for i in range(node.lineno, node.end_lineno + 1) if i in comments]
        above, line = [], node.lineno - 1
        while line in comments and line not in code_lines:
            above.insert(0, comments[line])
            line -= 1
        text = " ".join(above + trailing).strip()
        if text:
            out[node.target.id] = text
    return out


def field_help(cls: type) -> dict[str, str]:
    """Meaning of every field of dataclass `cls` (metadata "help" > docstring section > source comment).

    Inherited fields are looked up in the class that declares them. Fields without any help are left out.
    """
    out: dict[str, str] = {}
    for klass in reversed([k for k in cls.__mro__ if dataclasses.is_dataclass(k)]):
        out.update(_comment_help(klass))
        out.update(_docstring_help(klass))
    for f in dataclasses.fields(cls):
        if "help" in f.metadata:
            out[f.name] = str(f.metadata["help"])
    names = {f.name for f in dataclasses.fields(cls)}
    return {k: v for k, v in out.items() if k in names}


def _toml(value: Any) -> str:
    """A default written as TOML (None -> "unset": TOML has no null, leave the key out)."""
    if value is None:
        return "unset"
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, (int, float)):
        return repr(value) if not (isinstance(value, float) and math.isinf(value)) else ("inf" if value > 0 else "-inf")
    if isinstance(value, (str, pathlib.PurePath)):
        return '"' + str(value).replace("\\", "\\\\").replace('"', '\\"') + '"'
    if isinstance(value, (list, tuple)):
        return "[" + ", ".join(_toml(v) for v in value) + "]"
    if isinstance(value, dict):
        return "{" + ", ".join(f"{k} = {_toml(v)}" for k, v in value.items()) + "}" if value else "{}"
    if dataclasses.is_dataclass(value):
        return "table"
    return str(value)


def _default(f: dataclasses.Field) -> Any:
    if f.default is not dataclasses.MISSING:
        return f.default
    if f.default_factory is not dataclasses.MISSING:  # type: ignore[misc]
        return f.default_factory()  # type: ignore[misc]
    return dataclasses.MISSING


def _keys(cls: type, names: tuple[str, ...] | None = None, rename: dict[str, str] | None = None,
          defaults: dict[str, Any] | None = None) -> tuple[KeyDoc, ...]:
    """KeyDocs of the fields `names` of dataclass `cls` (all fields by default), in declaration order."""
    fields = {f.name: f for f in dataclasses.fields(cls)}
    hints = typing.get_type_hints(cls)
    helps = field_help(cls)
    names = names or tuple(fields)
    out = []
    for name in names:
        f = fields[name]
        default = (defaults or {}).get(name, _default(f))
        hint = hints[name]
        if dataclasses.is_dataclass(hint):
            shown = f"table [{hint.__name__}]"
        elif default is dataclasses.MISSING:
            shown = "required"
        else:
            shown = _toml(default)
        out.append(KeyDoc((rename or {}).get(name, name), type_name(hint), shown, helps.get(name, UNDOCUMENTED)))
    return tuple(out)


def _not(cls: type, *exclude: str) -> tuple[str, ...]:
    return tuple(f.name for f in dataclasses.fields(cls) if f.name not in exclude)


def tables() -> tuple[list[TableDoc], list[TableDoc]]:
    """(tables of a training config, tables of a data-generation config), as load_config and
    load_generation_config read them."""
    tl_plain = tuple(k for k in TL_KEYS if k not in ("source_stop", "iterative"))
    train = [
        TableDoc("[data]", "DataConfig", "Where the ICHOR CSVs are and which atoms and properties to model. "
                 "`system`, `atoms` and `properties` are required.",
                 _keys(DataConfig, _not(DataConfig, "dir_source"))),
        TableDoc("[model]", "FitSettings", "The model's convention and objective (fields of FitSettings, shared "
                 "by both trainers).", _keys(FitSettings, MODEL_KEYS)),
        TableDoc("[train]", "TrainConfig, FitSettings", "Which trainer, and the optimiser, device and seed "
                 "(fields of FitSettings).",
                 _keys(TrainConfig, ("method",)) + _keys(FitSettings, TRAIN_KEYS)),
        TableDoc("[train.stop]", "StoppingRule", "When an optimisation stops (DL and the TL relaxation; the TL "
                 "sources have their own rule, `[train.tl.source_stop]`).", _keys(StoppingRule)),
        TableDoc("[train.dl]", "DirectTrainer", "DirectTrainer's own fields (`method = \"dl\"`).",
                 _keys(DirectTrainer, DL_KEYS)),
        TableDoc("[train.tl]", "TransferTrainer", "TransferTrainer's own fields (`method = \"tl\"`); "
                 "see docs/transfer-learning.md for the defaults and why.", _keys(TransferTrainer, tl_plain)),
        TableDoc("[train.tl.source_stop]", "StoppingRule", "Stopping rule of the TL sources (the seed only needs "
                 "the right basin, so it is looser than `[train.stop]`).",
                 _keys(StoppingRule, defaults={f.name: getattr(TransferTrainer().source_stop, f.name)
                                               for f in dataclasses.fields(StoppingRule)})),
        TableDoc("[train.tl.iterative]", "IterativeSettings", "The iterative relaxation (CG + Lanczos) for targets "
                 "too big for a Cholesky factor; see docs/large-n.md.", _keys(IterativeSettings)),
        TableDoc("[output]", "Config", "Where `tlgp train` writes models, results.csv and the export.",
                 _keys(Config, ("output_dir_pattern",), rename={"output_dir_pattern": "dir"})),
        TableDoc("[submit]", "SubmitConfig", "How `tlgp submit` launches the shards; see docs/cluster.md.",
                 _keys(SubmitConfig)),
    ]
    generation = [
        TableDoc("[molecule]", "MoleculeSpec", "The molecule. `system` and `source` are required.",
                 _keys(MoleculeSpec)),
        TableDoc("[sampling]", "SamplingSpec", "How conformations are sampled.", _keys(SamplingSpec)),
        TableDoc("[split]", "SplitSpec", "How many conformations.", _keys(SplitSpec)),
        TableDoc("[qm]", "QMSettings", "The tblite calculation that labels them.", _keys(QMSettings)),
        TableDoc("[output]", "GenerationConfig", "Where the data set goes (`{system}` and `{system_lower}` are "
                 "replaced; relative to the config file's folder; `--out` overrides it).",
                 _keys(GenerationConfig, ("out_dir", "workers"), rename={"out_dir": "dir"},
                       defaults={"out_dir": "{system}"})),
    ]
    return train, generation


def _cell(text: str) -> str:
    return text.replace("|", "\\|").replace("\n", " ")


def _shown(default: str) -> str:
    return default if default in ("required", "unset") or default.startswith("table") else f"`{_cell(default)}`"


def _table_markdown(t: TableDoc) -> list[str]:
    lines = [f"### `{t.name}`", "", f"{t.intro} (`{t.source}`)", "", "| key | type | default | meaning |",
             "|---|---|---|---|"]
    lines += [f"| `{k.key}` | {_cell(k.type)} | {_shown(k.default)} | {_cell(k.meaning)} |" for k in t.keys]
    return lines + [""]


def configuration_markdown() -> str:
    """docs/configuration.md: every TOML key with its type, default and meaning, from the config dataclasses."""
    train, generation = tables()
    lines = [
        "# Configuration reference",
        "",
        "<!-- Generated from the config dataclasses; do not edit. Regenerate with:",
        f"     {REGENERATE} -->",
        "",
        "A TOML file says everything about a run. Unknown tables and keys, and values of the wrong type, are",
        "errors that name the file and the key. A key left out takes its default; \"unset\" means the default is",
        "None (TOML has no null: leave the key out). Integers are accepted where a float is expected.",
        "",
        "## Training configs",
        "",
        "Read by `tlgp train | compare | export | submit | merge` and by `tlgp_torch.load_config` (examples in",
        "`configs/*.toml`). `[model]`, `[train]` and its sub-tables are the keyword arguments of",
        "`TransferTrainer` / `DirectTrainer`, so the same names work in Python.",
        "",
    ]
    for t in train:
        lines += _table_markdown(t)
    lines += [
        "## Data-generation configs",
        "",
        "Read by `tlgp data generate` (examples in `configs/data/*.toml`; see docs/data-generation.md).",
        "",
    ]
    for t in generation:
        lines += _table_markdown(t)
    return "\n".join(lines).rstrip() + "\n"


def write_page(generate: Callable[[], str], prog: str, description: str, page: str,
               argv: list[str] | None = None) -> int:
    """The command line of a generated docs page: write generate() to --out (default: print it).

    Args:
        generate: returns the page's markdown.
        prog: the command's name in its help (e.g. "python -m tlgp_torch.config.reference").
        description: one line for --help.
        page: the page's usual path, named in --help (e.g. "docs/configuration.md").
        argv: arguments (None: sys.argv[1:]).

    Returns:
        0 (the exit status).

    Example:
        >>> import tempfile, pathlib
        >>> with tempfile.TemporaryDirectory() as tmp:
        ...     out = pathlib.Path(tmp) / "page.md"
        ...     status = write_page(lambda: "# page\n", "demo", "a page", "docs/page.md", ["--out", str(out)])
        ...     text = out.read_text()
        >>> status, text
        (0, '# page\n')
    """
    parser = argparse.ArgumentParser(prog=prog, description=description)
    parser.add_argument("--out", type=pathlib.Path, help=f"file to write (e.g. {page})")
    args = parser.parse_args(argv)
    text = generate()
    if args.out is None:
        sys.stdout.write(text)
    else:
        args.out.write_text(text, encoding="utf-8")
        print(f"wrote {args.out}", file=sys.stderr)
    return 0


def main(argv: list[str] | None = None) -> int:
    """Write docs/configuration.md to --out (default: print it)."""
    return write_page(configuration_markdown, "python -m tlgp_torch.config.reference", __doc__.split("\n")[0],
                      "docs/configuration.md", argv)


if __name__ == "__main__":
    sys.exit(main())
