"""GFN2-xTB data generation: configs, bad input, frame checks, caching / resume, determinism, CSV output."""
import os

os.environ.setdefault("OMP_NUM_THREADS", "1")  # before tblite loads OpenMP: one thread is fastest at this size

import math
import pathlib

import numpy as np
import pytest
import torch

from tlgp_torch.config.toml import ConfigError
from tlgp_torch.features import alf_features
from tlgp_torch.generation import (
    GenerationError,
    MoleculeError,
    check_geometry,
    generate,
    load_generation_config,
    plan_tasks,
    read_xyz,
)
from tlgp_torch.generation.checks import Topology, near_duplicates
from tlgp_torch.io.ichor_csv import read_ichor_csv
from tlgp_torch.units import ANGSTROM_TO_BOHR

WATER = [8, 1, 1]
WATER_POS = np.array([[0.0, 0.0, 0.12], [0.0, 0.76, -0.47], [0.0, -0.76, -0.47]])

WATER_NM = """
[molecule]
system = "WATER"
source = "g2:H2O"
[sampling]
method = "normal_modes"
trajectories = 2
{extra}
[split]
train = 30
validation = 10
[output]
dir = "out/{{system}}"
"""


def need_qm():
    pytest.importorskip("tblite", reason="needs the qm extra (tblite): pip install tlgp_torch[qm]")
    pytest.importorskip("ase", reason="needs the qm extra (ase): pip install tlgp_torch[qm]")


def write(tmp_path: pathlib.Path, text: str, name: str = "data.toml") -> pathlib.Path:
    path = tmp_path / name
    path.write_text(text)
    return path


# ------------------------------------------------------------------ no QM needed

def test_config_defaults_paths_and_unknown_keys(tmp_path):
    cfg = load_generation_config(write(tmp_path, WATER_NM.format(extra="")))
    assert cfg.out_dir == (tmp_path / "out" / "WATER").resolve()
    assert cfg.qm.accuracy == 0.01 and cfg.sampling.temperature == 300.0
    tasks = plan_tasks(cfg)
    assert [t["role"] for t in tasks] == ["training", "validation"]
    assert [t["n_frames"] for t in tasks] == [math.ceil(30 * 1.1), math.ceil(10 * 1.1)]
    with pytest.raises(ConfigError, match=r"unknown key 'temprature' in \[sampling\]"):
        load_generation_config(write(tmp_path, WATER_NM.format(extra="temprature = 300")))
    with pytest.raises(ConfigError, match="letters and digits"):
        load_generation_config(write(tmp_path, WATER_NM.format(extra="").replace('"WATER"', '"WA_TER"')))
    with pytest.raises(ConfigError, match="trajectories must be >= 2"):
        load_generation_config(write(tmp_path, WATER_NM.format(extra="").replace("= 2", "= 1")))


def test_plan_gives_validation_its_own_trajectories(tmp_path):
    text = WATER_NM.format(extra="").replace("trajectories = 2", "trajectories = 5")
    cfg = load_generation_config(write(tmp_path, text.replace("= 30", "= 2000").replace("= 10", "= 500")))
    tasks = plan_tasks(cfg)
    assert [t["role"] for t in tasks].count("validation") == 1
    assert {t["n_frames"] for t in tasks} == {550}


def test_xyz_unknown_element_and_overlap_are_named(tmp_path):
    (tmp_path / "bad.xyz").write_text("3\ncomment\nO 0 0 0\nXx 0 0 1\nH 1 0 0\n")
    with pytest.raises(MoleculeError, match=r"bad.xyz, line 4: atom 1: unknown element 'Xx'"):
        read_xyz(tmp_path / "bad.xyz")
    with pytest.raises(MoleculeError, match=r"overlapping atoms H2 and H3 \(0.100 angstrom"):
        check_geometry([8, 1, 1], [[0, 0, 0], [1, 0, 0], [1.1, 0, 0]])
    (tmp_path / "ok.xyz").write_text("3\nwater\nO 0 0 0.12\nH 0 0.76 -0.47\nH 0 -0.76 -0.47\n")
    numbers, pos = read_xyz(tmp_path / "ok.xyz")
    assert numbers == WATER and pos.shape == (3, 3)


def test_topology_flags_broken_new_bonds_overlap_and_separation():
    topo = Topology.of(WATER, WATER_POS)
    assert topo.problem(WATER_POS) is None
    far = WATER_POS.copy()
    far[1] = [0, 2.5, -0.47]
    assert "bond O1-H2 broken" in topo.problem(far)
    close = WATER_POS.copy()
    close[2] = [0, 0.21, -0.47]  # 0.55 angstrom: closer than R_H + R_H, not overlapping
    assert "new bond H2-H3" in topo.problem(close)
    overlap = WATER_POS.copy()
    overlap[2] = overlap[1] + [0, 0.1, 0]
    assert "overlapping atoms H2-H3" in topo.problem(overlap)
    dimer = np.concatenate([WATER_POS, WATER_POS + [2.9, 0, 0]])
    topo2 = Topology.of(WATER * 2, dimer)
    apart = np.concatenate([WATER_POS, WATER_POS + [6.0, 0, 0]])
    assert "fragments 1 and 2 separated" in topo2.problem(apart)
    assert topo2.problem(dimer) is None


def test_near_duplicates_are_rotation_invariant():
    gen = torch.Generator().manual_seed(0)
    pos = torch.randn(5, 4, 3, generator=gen, dtype=torch.float64).numpy() * 2
    q, _ = np.linalg.qr(np.random.default_rng(0).standard_normal((3, 3)))
    frames = np.concatenate([pos, pos[1:2] @ q.T + 3.0, pos[2:3] + 1e-5])
    assert near_duplicates(frames, 1e-3).tolist() == [False] * 5 + [True, True]


# ------------------------------------------------------------------ with tblite / ase

def test_gfn2_labels_sum_and_are_reproducible():
    need_qm()
    from tlgp_torch.generation import GFN2
    gfn2 = GFN2(WATER)
    a, b = gfn2(WATER_POS), gfn2(WATER_POS)
    assert a["energies"].sum() == pytest.approx(a["energy"], abs=1e-10)
    assert abs(a["charges"].sum()) < 1e-8 and a["charges"][0] < 0
    assert np.abs(a["energies"] - b["energies"]).max() < 3e-7


def test_generate_writes_csvs_xyz_provenance_and_caches(tmp_path):
    need_qm()
    cfg = load_generation_config(write(tmp_path, WATER_NM.format(extra="")))
    rep = generate(cfg, in_process=True)
    assert (rep.n_train, rep.n_validation, rep.tasks_computed) == (30, 10, 2)
    out = cfg.out_dir
    train = read_ichor_csv(out / "WATER_O1_TRAINING_SET.csv")
    assert train.property_names == ["energy", "q00"] and train.x.shape == (30, 3)
    assert torch.isfinite(train.y).all() and (train.property("q00") < 0).all()
    assert "iqa" not in (out / "WATER_O1_TRAINING_SET.csv").read_text().splitlines()[0]
    assert "NOT IQA" in (out / "README.md").read_text() and "NOT IQA" in (out / "provenance.json").read_text()
    assert rep.alf == {"O1": [1, 2, 3], "H2": [2, 1, 3], "H3": [3, 1, 2]}
    ase_io = pytest.importorskip("ase.io")
    frames = ase_io.read(out / "WATER_training.xyz", index=":")
    assert len(frames) == 30
    f0 = torch.from_numpy(frames[0].positions * ANGSTROM_TO_BOHR)
    assert torch.allclose(alf_features(f0, torch.tensor([[0, 1, 2]]))[0], train.x[0], atol=1e-9)
    assert frames[0].arrays["atomic_energy_hartree"][0] == pytest.approx(train.property("energy")[0].item())
    # rerun: nothing recomputed; an interrupted run (no outputs yet, one work unit missing) recomputes that unit
    before = (out / "WATER_H2_VALIDATION_SET.csv").read_bytes()
    assert generate(cfg, in_process=True).up_to_date
    (out / "provenance.json").unlink()
    (out / "cache" / "task_001.npz").unlink()
    rep2 = generate(cfg, in_process=True)
    assert (rep2.tasks_computed, rep2.tasks_cached, rep2.up_to_date) == (1, 1, False)
    assert (out / "WATER_H2_VALIDATION_SET.csv").read_bytes() == before


def test_scf_failures_are_dropped_with_frame_numbers(tmp_path, monkeypatch):
    need_qm()
    from tlgp_torch.generation import xtb
    cfg = load_generation_config(write(tmp_path, WATER_NM.format(extra="")))
    generate(cfg, in_process=True)  # reference geometry and modes cached; now make labelling fail twice
    for path in [cfg.out_dir / "provenance.json", *cfg.out_dir.glob("cache/task_*.npz")]:
        path.unlink()
    calls = {"n": 0}
    real = xtb.GFN2.__call__

    def flaky(self, positions):
        calls["n"] += 1
        if calls["n"] in (3, 7):
            raise xtb.SCFError("SCF not converged in 250 cycles")
        return real(self, positions)
    monkeypatch.setattr(xtb.GFN2, "__call__", flaky)
    rep = generate(cfg, in_process=True)
    assert len(rep.drops) == 2 and all("GFN2 failed (SCF not converged" in d for d in rep.drops)
    assert rep.drops[0].startswith("training normal-mode chunk 0, frame 2: ") and "frame dropped" in rep.drops[0]
    assert rep.n_train == 30
    for path in cfg.out_dir.glob("*.csv"):
        assert "nan" not in path.read_text().lower()


def test_too_few_frames_stops_with_a_clear_message(tmp_path):
    need_qm()
    cfg = load_generation_config(write(tmp_path, WATER_NM.format(extra="duplicate_tolerance = 10.0")))
    with pytest.raises(GenerationError, match=r"usable training frames for the 30 requested .* near-duplicates"):
        generate(cfg, in_process=True)


def test_md_fragmentation_and_scf_failure_stop_the_run():
    need_qm()
    from tlgp_torch.generation.sampling import MDSettings, langevin_md
    from tlgp_torch.generation.xtb import QMSettings
    md = MDSettings(equilibration_ps=0.0, stride_fs=1.0)

    class BreaksAtFrame3(Topology):
        def problem(self, positions):
            self.calls = getattr(self, "calls", 0) + 1
            return "bond O1-H2 broken (2.10 angstrom)" if self.calls == 4 else None
    topo = BreaksAtFrame3.of(WATER, WATER_POS)
    with pytest.raises(GenerationError, match=r"traj 7, frame 3 \(MD step 8, t = 0.004 ps.*broken.*run stopped"):
        langevin_md(WATER, WATER_POS, 6, md, np.random.default_rng(0), topo, label="traj 7")
    with pytest.raises(GenerationError, match=r"equilibration step 0: GFN2 SCF failed during MD .*run stopped"):
        langevin_md(WATER, WATER_POS, 2, md, np.random.default_rng(0), Topology.of(WATER, WATER_POS),
                    qm=QMSettings(max_iterations=1))


def test_md_is_deterministic_and_cli_matches_in_process_run(tmp_path):
    need_qm()
    from tlgp_torch.cli.main import main
    text = WATER_NM.format(extra="equilibration_ps = 0.02\nstride_fs = 2.0").replace('"normal_modes"', '"md"')
    cfg = load_generation_config(write(tmp_path, text))
    generate(cfg, in_process=True)
    assert main(["data", "generate", str(tmp_path / "data.toml"), "--workers", "2", "--force",
                 "--out", str(tmp_path / "cli")]) == 0
    names = sorted(p.name for p in cfg.out_dir.glob("*.csv"))
    assert names == sorted(p.name for p in (tmp_path / "cli").glob("*.csv")) and len(names) == 6
    for name in names:  # workers run single-threaded BLAS, this process may not: equal to rounding, not bitwise
        a, b = read_ichor_csv(cfg.out_dir / name), read_ichor_csv(tmp_path / "cli" / name)
        assert torch.allclose(a.x, b.x, rtol=0, atol=1e-9) and torch.allclose(a.y, b.y, rtol=0, atol=1e-9)


TRAINING_CONFIGS = {"ethanol": "ethanol", "benzene": "benzene", "formic_acid_dimer": "formic_acid_dimer",
                    "fomepizole": "fomepizole", "water": "water_gfn2", "methanol": "methanol_gfn2"}


@pytest.mark.parametrize("data_name", sorted(TRAINING_CONFIGS))
def test_shipped_configs_agree(data_name, monkeypatch):
    """Each data config loads; its training config reads the folder it writes, every atom, with the ALF it uses."""
    monkeypatch.delenv("TLGP_DATA_DIR", raising=False)  # the env var overrides [data] dir by design
    pytest.importorskip("ase", reason="molecule sources need the qm extra (ase): pip install tlgp_torch[qm]")
    if data_name == "fomepizole":
        pytest.importorskip("rdkit", reason="SMILES sources need the qm extra (rdkit): pip install tlgp_torch[qm]")
    from tlgp_torch.config.experiment import load_config
    from tlgp_torch.features.alf import choose_alf
    from tlgp_torch.generation import load_molecule
    repo = pathlib.Path(__file__).resolve().parents[1]
    gen = load_generation_config(repo / "configs" / "data" / f"{data_name}.toml")
    train = load_config(repo / "configs" / f"{TRAINING_CONFIGS[data_name]}.toml")
    mol = load_molecule(gen.molecule.source, seed=gen.molecule.seed)
    assert train.data.dir == gen.out_dir and train.data.system == gen.system
    assert train.data.atoms == mol.atom_names and train.data.n_atoms == len(mol.numbers)
    assert train.data.properties == ["energy", "q00"]
    alf = choose_alf(mol.numbers, mol.positions) + 1
    assert {a: list(v) for a, v in train.data.alf.items()} == {n: alf[i].tolist() for i, n in enumerate(mol.atom_names)}
