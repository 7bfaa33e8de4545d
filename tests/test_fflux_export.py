"""A GFN2-trained molecule exported for FFLUX: --fflux-energy energy writes SYSTEM_iqa_ATOM.model files that meet
the reader rules of ../shared/design/fflux-conventions.md (section 6), with the true label in header and manifest."""
import dataclasses
import json
import pathlib
import re

import pytest
import torch

from tlgp_torch.cli.main import main
from tlgp_torch.data.dataset import AtomDataset
from tlgp_torch.export.ferebus import map_fflux_energy
from tlgp_torch.features import alf_features
from tlgp_torch.io.checkpoint import load_checkpoint
from tlgp_torch.io.ferebus_model import read_ferebus_model
from tlgp_torch.io.ichor_csv import write_ichor_csv

ATOMS = ("O1", "H2", "H3")
ALF = {"O1": (1, 2, 3), "H2": (2, 1, 3), "H3": (3, 1, 2)}
# first words of the lines of each key section, in the order FFLUX's reader needs them (section 6); the third line
# of [kernels] may be any "<word> <number>" (read as the prefactor)
ORDER = {"system": ["name", "atom", "property", "ALF"],
         "dimensions": ["number_of_atoms", "number_of_features", "number_of_training_points"],
         "mean": ["type", "value"], "kernels": ["number_of_kernels", "composition", "prefactor"]}
NUMBER = re.compile(r"^[-+]?(\d+\.?\d*|\.\d+)([eEdD][-+]?\d+)?$")


def fflux_reader_problems(folder: pathlib.Path) -> list[str]:
    """What the compiled FFLUX reader would trip on in a molecule folder (empty: FFLUX loads it)."""
    problems, sizes, have = [], {}, set()
    for path in sorted(folder.glob("*.model")):
        parts = path.stem.split("_")
        if len(parts) != 3:
            problems.append(f"{path.name}: not SYSTEM_property_ATOM.model (SYSTEM without underscores)")
            continue
        system, prop, atom = parts
        have.add((prop, atom))
        lines = [ln.strip() for ln in path.read_text().splitlines() if ln.strip()]
        sections: dict[str, list[str]] = {}
        current = None
        for ln in lines:
            if ln.startswith("["):
                current = ln.strip("[]")
                sections[current] = []
            elif not ln.startswith("#") and current is not None:
                sections[current].append(ln)
        for sec, words in ORDER.items():
            got = sections.get(sec, [])
            if len(got) < len(words):
                problems.append(f"{path.name}: [{sec}] has {len(got)} lines, FFLUX reads {len(words)}: {words}")
                continue
            for want, ln in zip(words, got):
                tokens = ln.split()
                if want == "prefactor" and not (len(tokens) >= 2 and NUMBER.match(tokens[1])):
                    problems.append(f"{path.name}: [{sec}] needs '<word> <number>' (prefactor), got {ln!r}")
                elif want != "prefactor" and tokens[0] != want:
                    problems.append(f"{path.name}: [{sec}] line {tokens[0]!r} where FFLUX reads {want!r}")
        if sections.get("system", [""] * 3)[1:3] != [f"atom {atom}", f"property {prop}"]:
            problems.append(f"{path.name}: [system] atom/property differ from the file name")
        if NUMBER.match(lines[-1].split()[0]) or lines[-1].startswith("["):
            problems.append(f"{path.name}: ends inside [weights] (FFLUX's reader loops forever)")
        n = int(sections["dimensions"][2].split()[1])
        if len(sections.get("weights", [])) != n or len(sections.get("training_data.x", [])) != n:
            problems.append(f"{path.name}: [weights] / [training_data.x] do not have {n} rows")
        sizes[path.name] = n
    if len(set(sizes.values())) > 1:
        problems.append(f"models of one molecule differ in training-set size: {sizes}")
    atoms = {a for _, a in have}
    for prop in {p for p, _ in have}:
        problems += [f"no {prop} model for {a}" for a in sorted(atoms) if (prop, a) not in have]
    return problems


def rounding_bound(m, x: torch.Tensor) -> torch.Tensor:
    """How far two correct evaluations of m's prediction at x [M, D] may differ: eps sum_i |w_i k_i| times N (the
    dot product's rounding in any order) plus 4 sum_d theta_d (x_d^2 + x_id^2) (the cancellation of a squared
    distance computed as |a|^2 + |b|^2 - 2 a.b, which one kernel form uses and the other not)."""
    scale = dataclasses.replace(m, weights=m.weights.abs(), mean=0.0).predict(x)
    spread = float((m.theta * (x.square().amax(0) + m.x.square().amax(0))).sum())
    return torch.finfo(torch.float64).eps * scale * (m.n_points + 4 * spread)


def _gfn2_like_water(folder: pathlib.Path, n: int = 14, seed: int = 0) -> None:
    """Water CSVs in the layout `tlgp data generate` writes: ALF features, `energy` (Ha) and `q00` (e) columns."""
    gen = torch.Generator().manual_seed(seed)
    pos = torch.tensor([[0.0, 0.0, 0.0], [1.81, 0.0, 0.0], [-0.45, 1.76, 0.0]], dtype=torch.float64)
    for kind, count in (("TRAINING", n), ("VALIDATION", 5)):
        frames = pos + 0.08 * torch.randn(count, 3, 3, generator=gen, dtype=torch.float64)
        x = alf_features(frames, torch.tensor([[a - 1 for a in ALF[atom]] for atom in ATOMS]))  # [F, 3, 3]
        for i, atom in enumerate(ATOMS):
            xi = x[:, i]
            offset = -4.0 if i == 0 else -0.4  # Hartree, GFN2-like atomic energies
            energy = offset + 0.05 * (xi[:, 0] - 1.8).square() + 0.01 * torch.cos(xi[:, 2])
            q00 = -0.6 + 0.1 * xi[:, 0] if i == 0 else 0.3 - 0.05 * xi[:, 1]
            data = AtomDataset(x=xi.contiguous(), y=torch.stack([energy, q00], 1), property_names=["energy", "q00"],
                               system="WATER", atom=atom)
            write_ichor_csv(data, folder / f"WATER_{atom}_{kind}_SET.csv")


@pytest.fixture(scope="module")
def trained(tmp_path_factory):
    """Six tiny GFN2-style water models trained by `tlgp train` (config, output folder)."""
    root = tmp_path_factory.mktemp("gfn2water")
    _gfn2_like_water(root)
    config = root / "water_gfn2.toml"
    alf = ", ".join(f"{a} = {list(v)}" for a, v in ALF.items())
    atoms = ", ".join(f'"{a}"' for a in ATOMS)
    config.write_text(f'[data]\ndir = "{root}"\nsystem = "WATER"\natoms = [{atoms}]\n'
                      f'properties = ["energy", "q00"]\nn_atoms = 3\nalf = {{ {alf} }}\n'
                      '[train]\nmethod = "dl"\nseed = 0\ndevice = "cpu"\n[train.stop]\nmax_iter = 8\n'
                      '[train.dl]\nrestarts = 1\n')
    out = root / "run"
    assert main(["train", str(config), "--out", str(out)]) == 0
    return config, out


def test_fflux_energy_mapping_writes_iqa_files_fflux_reads(trained, tmp_path, capsys):
    config, out = trained
    assert main(["export", str(config), "--out", str(out), "--to", str(tmp_path / "plain"), "--formats",
                 "ferebus"]) == 0
    plain = tmp_path / "plain" / "WATER"
    # the default is honest: energy models keep their name, and the user is told why FFLUX will not see them
    assert sorted(p.name for p in plain.glob("*_energy_*.model")) == [f"WATER_energy_{a}.model" for a in
                                                                      sorted(ATOMS)]
    assert not list(plain.glob("*_iqa_*")) and "--fflux-energy energy" in capsys.readouterr().err
    assert json.loads((plain / "manifest.json").read_text())["fflux_energy"] is None

    assert main(["export", str(config), "--out", str(out), "--to", str(tmp_path / "fflux"),
                 "--fflux-energy", "energy"]) == 0
    folder = tmp_path / "fflux" / "WATER"
    assert sorted(p.name for p in folder.glob("*_iqa_*.model")) == [f"WATER_iqa_{a}.model" for a in sorted(ATOMS)]
    assert not list(folder.glob("*_energy_*")) and len(list(folder.glob("*.model"))) == 6
    assert fflux_reader_problems(folder) == []
    for atom in ATOMS:
        text = (folder / f"WATER_iqa_{atom}.model").read_text()
        assert "# true_property = energy" in text and "not an IQA energy" in text.split("[system]")[0]
        m = read_ferebus_model(folder / f"WATER_iqa_{atom}.model")
        assert m.property == "iqa" and m.metadata["true_property"] == "energy" and m.alf == ALF[atom]
        # the file predicts what the trained model predicts (same weights, theta and mean, written with repr)
        result, _ = load_checkpoint(out / "models" / f"WATER_energy_{atom}.pt")
        x = result.x_train[:4] + 0.01
        assert ((m.predict(x) - result.predict(x)).abs() <= rounding_bound(m, x)).all()
    manifest = json.loads((folder / "manifest.json").read_text())
    assert manifest["fflux_energy"] == {"property": "energy", "written_as": "iqa"}
    energy = [e for e in manifest["models"] if e["property"] == "energy"]
    assert [e["file"] for e in energy] == [f"WATER_iqa_{a}.model" for a in ATOMS]
    assert all(e["fflux_property"] == "iqa" for e in energy)
    assert manifest["potential"]["properties"] == ["energy", "q00"]  # the torch potential keeps the true label


def test_fflux_energy_from_the_config_and_at_train_time(trained, tmp_path):
    """[export] fflux_energy applies to the .model files `tlgp train` writes and to `tlgp export`."""
    config, out = trained
    mapped = tmp_path / "mapped.toml"
    mapped.write_text(config.read_text() + '[export]\nfflux_energy = "energy"\n')
    run = tmp_path / "run"
    assert main(["train", str(mapped), "--out", str(run)]) == 0
    assert sorted(p.name for p in (run / "ferebus").glob("*.model")) == sorted(
        f"WATER_{p}_{a}.model" for a in ATOMS for p in ("iqa", "q00"))
    assert main(["export", str(mapped), "--out", str(run), "--formats", "ferebus"]) == 0
    assert fflux_reader_problems(run / "export" / "WATER") == []
    assert len(list((run / "export" / "WATER").glob("*_iqa_*.model"))) == len(ATOMS)


def test_mapping_errors_name_the_setting(trained):
    config, out = trained
    from tlgp_torch.config.experiment import load_config
    from tlgp_torch.export.molecule import trained_models
    models = trained_models(load_config(config), out)
    with pytest.raises(ValueError, match=r"fflux_energy: no model has property 'iqa2'.*energy, q00"):
        map_fflux_energy(models, "iqa2")
    iqa = map_fflux_energy(models, "energy")
    with pytest.raises(ValueError, match="already include 'iqa'"):
        map_fflux_energy(iqa, "q00")
    assert map_fflux_energy(models, None) == models


def test_the_checker_finds_what_fflux_trips_on(trained, tmp_path):
    """fflux_reader_problems is not vacuous: a FEREBUS 7.2-style file (no prefactor, ends in [weights]) and a
    missing atom are found."""
    config, out = trained
    assert main(["export", str(config), "--out", str(out), "--to", str(tmp_path), "--formats", "ferebus",
                 "--fflux-energy", "energy"]) == 0
    folder = tmp_path / "WATER"
    path = folder / "WATER_iqa_O1.model"
    text = path.read_text()
    path.write_text(re.sub(r"prefactor .*\n", "", text).replace("\n# end\n", "\n"))
    (folder / "WATER_iqa_H3.model").unlink()
    problems = fflux_reader_problems(folder)
    assert any("prefactor" in p for p in problems) and any("ends inside [weights]" in p for p in problems)
    assert "no iqa model for H3" in problems
