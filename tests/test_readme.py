"""The README's commands, run in order on a fresh clone: set-up, quickstart, train, export, load in ASE.

The commands are the README's fenced ```bash and ```python blocks, so README and test cannot drift. A block
preceded by an HTML comment `<!-- readme-test: skip (reason) -->` is not run (the reason is printed).

The slow test clones the repository's committed HEAD into a temporary folder, makes a virtual environment there
and runs the blocks in order in the clone (bash blocks with `bash -eu`, python blocks with the venv's python).
By default the venv sees this interpreter's installed packages (a .pth line), so the set-up commands find torch
and the extras already there and only install tlgp_torch from the clone; set TLGP_README_FRESH_VENV=1 for an
empty venv that downloads everything (minutes, and it needs the package index).

    python -m pytest -q -p no:cacheprovider -m slow tests/test_readme.py
"""
from __future__ import annotations

import os
import pathlib
import re
import shutil
import subprocess
import sys
import sysconfig
import time
from dataclasses import dataclass

import pytest

ROOT = pathlib.Path(__file__).resolve().parents[1]
README = ROOT / "README.md"
SKIP = re.compile(r"<!--\s*readme-test:\s*skip\s*(.*?)\s*-->")
FENCE = re.compile(r"^```(\w*)\s*$")
RUN_LANGUAGES = ("bash", "python")
BLOCK_TIMEOUT_S = 1800  # one block on a contended 2-core machine; the whole sequence is meant to take minutes
# pages linked from the README that other pieces of work write (docs/transfer-learning.md etc.): not checked here
PAGES_WRITTEN_ELSEWHERE: set[str] = set()  # every linked page exists now


@dataclass(frozen=True)
class Block:
    """One fenced code block of the README."""

    language: str
    code: str
    line: int             # 1-based line of the opening fence
    skip: str | None = None  # reason, when a readme-test: skip comment precedes the block


def readme_blocks(text: str) -> list[Block]:
    """Every fenced code block of a markdown text, in order, with its language and skip reason."""
    blocks, lines, i = [], text.splitlines(), 0
    while i < len(lines):
        start = FENCE.match(lines[i])
        if not start:
            i += 1
            continue
        j = i + 1
        while j < len(lines) and lines[j].strip() != "```":
            j += 1
        if j == len(lines):
            raise ValueError(f"README.md line {i + 1}: code block never closed")
        k = i - 1
        while k >= 0 and not lines[k].strip():
            k -= 1
        skip = SKIP.match(lines[k].strip()) if k >= 0 else None
        blocks.append(Block(start.group(1), "\n".join(lines[i + 1:j]) + "\n", i + 1,
                            (skip.group(1) or "no reason given") if skip else None))
        i = j + 1
    return blocks


def runnable(blocks: list[Block]) -> list[Block]:
    """The blocks the README test runs: bash and python, not marked skip."""
    return [b for b in blocks if b.language in RUN_LANGUAGES and b.skip is None]


def test_readme_blocks_parse_languages_lines_and_skips():
    text = ("x\n```bash\necho a\n```\n<!-- readme-test: skip (later) -->\n\n```python\nprint(1)\n```\n"
            "```toml\na=1\n```\n")
    blocks = readme_blocks(text)
    assert [(b.language, b.line, b.skip) for b in blocks] == [("bash", 2, None), ("python", 7, "(later)"),
                                                             ("toml", 10, None)]
    assert blocks[0].code == "echo a\n"
    assert [b.line for b in runnable(blocks)] == [2]
    with pytest.raises(ValueError, match="line 2"):
        readme_blocks("x\n```bash\necho a\n")


def test_readme_runs_setup_quickstart_train_export_ase_in_that_order():
    code = "".join(b.code for b in runnable(readme_blocks(README.read_text(encoding="utf-8"))))
    steps = ["pip install torch==", "pip install -e", "python experiments/quickstart.py", "tlgp train ",
             "tlgp export ", "FFLUXCalculator("]
    where = [code.find(s) for s in steps]
    assert all(w >= 0 for w in where), [s for s, w in zip(steps, where) if w < 0]
    assert where == sorted(where), f"README steps out of order: {dict(zip(steps, where))}"


def test_readme_is_short_and_its_links_exist():
    text = README.read_text(encoding="utf-8")
    assert len(text.splitlines()) <= 160
    links = re.findall(r"\]\(([^)#:]+)\)", text)
    assert links
    missing = [link for link in links if link not in PAGES_WRITTEN_ELSEWHERE and not (ROOT / link).exists()]
    assert not missing


def _venv(tmp: pathlib.Path, fresh: bool) -> pathlib.Path:
    venv = tmp / "venv"
    subprocess.run([sys.executable, "-m", "venv", str(venv)], check=True)
    if not fresh:  # the venv sees this interpreter's packages (plain path line: their .pth files are not run)
        site = subprocess.run([str(venv / "bin" / "python"), "-c", "import sysconfig; print(sysconfig.get_paths()"
                               "['purelib'])"], check=True, capture_output=True, text=True).stdout.strip()
        pathlib.Path(site, "zz_readme_test_parent.pth").write_text(sysconfig.get_paths()["purelib"] + "\n")
    return venv


@pytest.mark.slow
def test_readme_commands_on_a_fresh_clone(tmp_path):
    if shutil.which("git") is None or not (ROOT / ".git").exists():
        pytest.skip("needs git and a git checkout to clone")
    clone = tmp_path / "clone"
    subprocess.run(["git", "clone", "-q", str(ROOT), str(clone)], check=True)
    venv = _venv(tmp_path, os.environ.get("TLGP_README_FRESH_VENV") == "1")
    env = {k: v for k, v in os.environ.items() if k not in ("PYTHONPATH", "PYTHONHOME", "TLGP_DATA_DIR")}
    env.update(VIRTUAL_ENV=str(venv), PATH=f"{venv / 'bin'}{os.pathsep}{env.get('PATH', '')}", MPLBACKEND="Agg")
    blocks = readme_blocks((clone / "README.md").read_text(encoding="utf-8"))
    for block in blocks:
        if block.skip is not None and block.language in RUN_LANGUAGES:
            print(f"README.md line {block.line}: {block.language} block skipped {block.skip}")
    times = []
    for block in runnable(blocks):
        cmd = ["bash", "-eu", "-c", block.code] if block.language == "bash" else \
            [str(venv / "bin" / "python"), "-c", block.code]
        t0 = time.perf_counter()
        run = subprocess.run(cmd, cwd=clone, env=env, capture_output=True, text=True, timeout=BLOCK_TIMEOUT_S)
        times.append((block.line, time.perf_counter() - t0))
        assert run.returncode == 0, (f"README.md line {block.line} ({block.language}) exited {run.returncode}:\n"
                                     f"{block.code}\n--- stdout\n{run.stdout[-4000:]}\n"
                                     f"--- stderr\n{run.stderr[-4000:]}")
    print("README blocks, wall s by line: " + ", ".join(f"{line}: {s:.1f}" for line, s in times))
    export = clone / "runs" / "quickstart" / "ETHANOL" / "export" / "ETHANOL"
    assert (export / "ETHANOL.pt").is_file() and (export / "manifest.json").is_file()
    models = sorted(export.glob("ETHANOL_iqa_*.model"))   # --fflux-energy energy: GFN2 energies under FFLUX's name
    assert len(models) == 9 and not list(export.glob("ETHANOL_energy_*.model"))
    assert "true_property = energy" in models[0].read_text()
