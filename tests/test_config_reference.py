"""docs/configuration.md is generated from the config dataclasses and must match them (and document every key)."""
from __future__ import annotations

import dataclasses
import pathlib
import subprocess
import sys
import textwrap

import pytest

from tlgp_torch.config.experiment import DL_KEYS, MODEL_KEYS, TL_KEYS, TRAIN_KEYS, DataConfig, load_config
from tlgp_torch.config.reference import REGENERATE, UNDOCUMENTED, configuration_markdown, field_help, tables
from tlgp_torch.generation.config import MoleculeSpec, SamplingSpec, SplitSpec
from tlgp_torch.generation.xtb import QMSettings
from tlgp_torch.optim.stopping import StoppingRule
from tlgp_torch.runtime.submit import SubmitConfig
from tlgp_torch.training.iterative import IterativeSettings
from tlgp_torch.training.transfer import TransferTrainer

ROOT = pathlib.Path(__file__).resolve().parents[1]
DOC = ROOT / "docs" / "configuration.md"


def test_configuration_md_is_up_to_date():
    assert DOC.is_file(), f"docs/configuration.md is missing; generate it with:\n    {REGENERATE}"
    if DOC.read_text(encoding="utf-8") != configuration_markdown():
        pytest.fail(f"docs/configuration.md is out of date with the config dataclasses; regenerate it with:\n"
                    f"    {REGENERATE}")


def test_module_writes_the_page(tmp_path):
    out = tmp_path / "configuration.md"
    subprocess.run([sys.executable, "-m", "tlgp_torch.config.reference", "--out", str(out)], cwd=ROOT, check=True,
                   capture_output=True)
    assert out.read_text(encoding="utf-8") == configuration_markdown()


def _documented() -> dict[str, dict[str, str]]:
    train, generation = tables()
    return {f"{'gen' if t in generation else 'train'} {t.name}": {k.key: k.meaning for k in t.keys}
            for t in train + generation}


def test_every_key_that_a_config_accepts_is_documented_with_a_meaning():
    docs = _documented()
    expected = {
        "train [data]": [f.name for f in dataclasses.fields(DataConfig) if f.name != "dir_source"],
        "train [model]": list(MODEL_KEYS),
        "train [train]": ["method", *TRAIN_KEYS],
        "train [train.stop]": [f.name for f in dataclasses.fields(StoppingRule)],
        "train [train.dl]": list(DL_KEYS),
        "train [train.tl]": [k for k in TL_KEYS if k not in ("source_stop", "iterative")],
        "train [train.tl.source_stop]": [f.name for f in dataclasses.fields(StoppingRule)],
        "train [train.tl.iterative]": [f.name for f in dataclasses.fields(IterativeSettings)],
        "train [output]": ["dir"],
        "train [submit]": [f.name for f in dataclasses.fields(SubmitConfig)],
        "gen [molecule]": [f.name for f in dataclasses.fields(MoleculeSpec)],
        "gen [sampling]": [f.name for f in dataclasses.fields(SamplingSpec)],
        "gen [split]": [f.name for f in dataclasses.fields(SplitSpec)],
        "gen [qm]": [f.name for f in dataclasses.fields(QMSettings)],
        "gen [output]": ["dir", "workers"],
    }
    assert sorted(docs) == sorted(expected)
    for table, keys in expected.items():
        assert list(docs[table]) == keys, table
        missing = [k for k, meaning in docs[table].items() if meaning == UNDOCUMENTED or not meaning]
        assert not missing, (f"{table}: no meaning for {missing}; add a comment on the field's line (or an "
                             f"Attributes: entry in the class docstring), then run {REGENERATE}")


def test_the_documented_defaults_are_the_trainers_defaults(tmp_path):
    """A config that spells out every [train.tl] and [train.stop] default as documented gives the default trainer."""
    docs = _documented()

    def lines(table: str) -> str:
        return "\n".join(f"{k} = {v}" for k, v in ((k, _default_of(table, k)) for k in docs[table]) if v != "unset")

    def _default_of(table: str, key: str) -> str:
        train, generation = tables()
        return next(k.default for t in train if f"train {t.name}" == table for k in t.keys if k.key == key)

    text = textwrap.dedent("""
        [data]
        system = "S"
        atoms = ["C1"]
        properties = ["iqa"]
        [model]
        {model}
        [train]
        {train}
        [train.stop]
        {stop}
        [train.tl]
        {tl}
        [train.tl.source_stop]
        {source_stop}
        [train.tl.iterative]
        {iterative}
        """).format(model=lines("train [model]"), train=lines("train [train]"), stop=lines("train [train.stop]"),
                    tl=lines("train [train.tl]"), source_stop=lines("train [train.tl.source_stop]"),
                    iterative=lines("train [train.tl.iterative]"))
    path = tmp_path / "defaults.toml"
    path.write_text(text.replace('device = "auto"\n', 'device = "cpu"\n'), encoding="utf-8")
    # device "auto" would pick a GPU where there is one; the comparison below is about every other key
    cfg = load_config(path)
    assert cfg.transfer_trainer() == TransferTrainer(device=cfg.transfer_trainer().device)


def test_field_help_sources_in_priority_order():
    @dataclasses.dataclass
    class Example:
        """An example.

        Attributes:
            b: from the docstring,
                continued.
            c (int): the docstring wins over the comment.
        """

        # from the lines above
        # (two of them)
        a: int = 1
        b: int = 2
        c: int = 3  # a comment that loses
        d: int = dataclasses.field(default=4, metadata={"help": "from metadata"})  # loses too
        e: int = 5

    helps = field_help(Example)
    assert helps == {"a": "from the lines above (two of them)", "b": "from the docstring, continued.",
                     "c": "the docstring wins over the comment.", "d": "from metadata"}
