"""Tests for TOML experiment configs."""

import pathlib

import pytest

from tlgp_torch.config.experiment import load_config
from tlgp_torch.config.toml import ConfigError
from tlgp_torch.training.direct import DirectTrainer
from tlgp_torch.training.transfer import TransferTrainer

REPO = pathlib.Path(__file__).resolve().parents[1]
MINIMAL = '[data]\nsystem = "WATER"\natoms = ["O1"]\nproperties = ["iqa"]\n'


def write(tmp_path, text, name="c.toml"):
    path = tmp_path / name
    path.write_text(text)
    return path


@pytest.fixture(autouse=True)
def no_env_data_dir(monkeypatch):
    monkeypatch.delenv("TLGP_DATA_DIR", raising=False)


def test_full_config(tmp_path):
    (tmp_path / "cfg").mkdir()
    path = write(tmp_path / "cfg", '''
[data]
dir = "../data"
system = "METHANOL"
atoms = ["C1", "H2"]
properties = ["iqa", "q00"]
n_atoms = 6
alf = { C1 = [1, 3, 2] }
[model]
convention = "fflux"
likelihood = "marginal"
nugget = 1e-9
mean = "train"
[train]
method = "dl"
optimizer = "adam"
seed = 7
device = "cpu"
init_range = [0.01, 1]
[train.stop]
rtol = 1e-5
max_iter = 50
[train.dl]
restarts = 3
[train.tl]
n_sources = 4
source_size = 100
transfer = ["lengthscale"]
source_stop = { max_iter = 20 }
[output]
dir = "out/{system}"
''')
    cfg = load_config(path)
    assert cfg.data.dir == (tmp_path / "data").resolve() and cfg.data.dir_source == "[data] dir"
    assert cfg.data.alf == {"C1": (1, 3, 2)} and cfg.data.n_atoms == 6 and cfg.data.atoms == ["C1", "H2"]
    assert cfg.train.method == "dl" and cfg.output_dir() == pathlib.Path("out/METHANOL")
    assert cfg.output_dir("elsewhere") == pathlib.Path("elsewhere")
    dl = cfg.trainer()
    assert isinstance(dl, DirectTrainer) and dl.restarts == 3 and dl.seed == 7 and dl.optimizer == "adam"
    assert dl.likelihood == "marginal" and dl.nugget == 1e-9 and dl.mean == "train" and dl.init_range == (0.01, 1)
    assert dl.stop.rtol == 1e-5 and dl.stop.max_iter == 50
    tl = cfg.transfer_trainer(seed=9)
    assert isinstance(tl, TransferTrainer) and tl.seed == 9 and tl.n_sources == 4 and tl.source_size == 100
    assert tl.transfer == ("lengthscale",) and tl.source_stop.max_iter == 20 and tl.stop.max_iter == 50
    assert tl.source_stop.rtol == TransferTrainer().source_stop.rtol  # keys left out: the sources' own defaults
    assert tl.source_restarts == TransferTrainer().source_restarts  # unset fields keep the trainer defaults


def test_minimal_config_defaults(tmp_path):
    cfg = load_config(write(tmp_path, MINIMAL))
    assert cfg.data.dir == tmp_path.resolve() and cfg.data.alf == {} and cfg.data.n_atoms is None
    assert cfg.train.method == "tl" and isinstance(cfg.trainer(), TransferTrainer)
    assert cfg.trainer().stop == DirectTrainer().stop


@pytest.mark.parametrize("extra,key,table,allowed", [
    ("[train.dl]\nrestart = 3\n", "restart", "[train.dl]", "restarts"),
    ("[train.tl]\nn_source = 3\n", "n_source", "[train.tl]", "n_sources"),
    ("[train.stop]\nmaxiter = 3\n", "maxiter", "[train.stop]", "max_iter"),
    ("[train]\nrestarts = 3\n", "restarts", "[train]", "seed"),
    ("[model]\nkernel = 'rbf'\n", "kernel", "[model]", "likelihood"),
    ("[output]\nfolder = 'x'\n", "folder", "[output]", "dir"),
    ("[train.tl.source_stop]\nmax_iters = 3\n", "max_iters", "[train.tl.source_stop]", "max_iter"),
])
def test_unknown_key(tmp_path, extra, key, table, allowed):
    with pytest.raises(ConfigError) as err:
        load_config(write(tmp_path, MINIMAL + extra))
    msg = str(err.value)
    assert f"unknown key {key!r} in {table}" in msg and "allowed keys:" in msg and allowed in msg


def test_unknown_data_key_and_table(tmp_path):
    with pytest.raises(ConfigError, match=r"unknown key 'atom' in \[data\]; allowed keys: system, atoms"):
        load_config(write(tmp_path, MINIMAL + 'atom = "O1"\n'))
    with pytest.raises(ConfigError, match=r"unknown table \[modle\]"):
        load_config(write(tmp_path, MINIMAL + "[modle]\n"))


@pytest.mark.parametrize("extra,message", [
    ("[train.stop]\nmax_iter = '30'\n", "train.stop.max_iter: expected int, got str"),
    ("[train.dl]\nrestarts = 2.5\n", "train.dl.restarts: expected int, got float"),
    ("[model]\nnugget = true\n", "model.nugget: expected float, got bool"),
    ("[train.tl]\ntransfer = 'lengthscale'\n", "train.tl.transfer: expected list of str"),
    ("[output]\ndir = 3\n", "output.dir: expected str, got int"),
])
def test_wrong_type(tmp_path, extra, message):
    with pytest.raises(ConfigError, match=message):
        load_config(write(tmp_path, MINIMAL + extra))


def test_wrong_type_in_data(tmp_path):
    with pytest.raises(ConfigError, match="data.atoms: expected list of str, got str"):
        load_config(write(tmp_path, MINIMAL.replace('["O1"]', '"O1"')))
    with pytest.raises(ConfigError, match=r"data.alf.C1: expected list of 3 int"):
        load_config(write(tmp_path, MINIMAL + "alf = { C1 = [1, 2] }\n"))


@pytest.mark.parametrize("extra,message", [
    ("[train.dl]\nrestarts = 0\n", "restarts must be >= 1"),
    ("[model]\nlikelihood = 'exact'\n", "likelihood must be one of"),
    ("[train]\nmethod = 'xl'\n", "train.method must be one of"),
])
def test_bad_values(tmp_path, extra, message):
    with pytest.raises(ConfigError, match=message):
        load_config(write(tmp_path, MINIMAL + extra))


def test_data_dir_precedence(tmp_path, monkeypatch):
    path = write(tmp_path, MINIMAL + 'dir = "from_config"\n')
    assert load_config(path).data.dir == (tmp_path / "from_config").resolve()
    monkeypatch.setenv("TLGP_DATA_DIR", str(tmp_path / "from_env"))
    cfg = load_config(path)
    assert cfg.data.dir == (tmp_path / "from_env").resolve() and cfg.data.dir_source == "TLGP_DATA_DIR"
    cfg = load_config(path, data_dir=tmp_path / "from_arg")
    assert cfg.data.dir == (tmp_path / "from_arg").resolve() and cfg.data.dir_source == "--data-dir"


def test_missing_data_file_message(tmp_path):
    cfg = load_config(write(tmp_path, MINIMAL), data_dir=tmp_path / "nowhere")
    expected = tmp_path.resolve() / "nowhere" / "WATER_O1_TRAINING_SET.csv"
    with pytest.raises(FileNotFoundError) as err:
        cfg.train_path("O1")
    msg = str(err.value)
    assert str(expected) in msg and "--data-dir" in msg and "TLGP_DATA_DIR" in msg
    assert cfg.validation_path("O1") is None


def test_missing_config_and_bad_toml(tmp_path):
    with pytest.raises(FileNotFoundError, match="config file not found"):
        load_config(tmp_path / "none.toml")
    with pytest.raises(ConfigError, match="invalid TOML"):
        load_config(write(tmp_path, "[data\n"))


@pytest.mark.parametrize("name", ["water", "ammonia", "methanol", "nma", "glycine"])
def test_shipped_configs(name):
    cfg = load_config(REPO / "configs" / f"{name}.toml")
    assert cfg.data.system == name.upper() and cfg.train.tl == {}
    assert cfg.data.dir == (REPO.parent / "shared" / "data" / "fflux").resolve()
    if cfg.data.dir.is_dir():
        for atom in cfg.data.atoms:
            assert cfg.train_path(atom).is_file()
