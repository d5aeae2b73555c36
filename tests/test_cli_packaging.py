"""What an installed sysgate carries: the licence in the wheel, the policy docs as package data,
shell completion and the man page generated from the parser (so none can miss a command)."""
from __future__ import annotations

import filecmp
import os
import shutil
import subprocess
import sys
import zipfile

import pytest

from sysgate import __version__
from sysgate.cli import build_parser
from sysgate.cli._parsertree import tree
from sysgate.cli.completion import script
from sysgate.cli.manpage import manpage
from support.cli import sysgate

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
SHIPPED = os.path.join(ROOT, "src", "sysgate", "docs", "examples")


def _files(top):
    return sorted(os.path.relpath(os.path.join(d, f), top) for d, _, fs in os.walk(top) for f in fs
                  if "__pycache__" not in d)


def test_shipped_docs_equal_the_examples_directory():
    """src/sysgate/docs/examples is a copy of examples/: after editing one, copy it over the other."""
    assert _files(SHIPPED) == _files(os.path.join(ROOT, "examples"))
    _, mismatch, errors = filecmp.cmpfiles(os.path.join(ROOT, "examples"), SHIPPED, _files(SHIPPED), shallow=False)
    assert (mismatch, errors) == ([], []), "run: cp -r examples/. src/sysgate/docs/examples/"


def test_policy_docs_prints_the_reference_and_the_examples():
    r = sysgate("policy", "docs")
    with open(os.path.join(ROOT, "examples", "README.md"), encoding="utf-8") as fh:
        assert (r.returncode, r.stdout) == (0, fh.read())
    r = sysgate("policy", "docs", "--list")
    assert r.stdout.split() == [f for f in _files(SHIPPED) if f != "README.md"]
    r = sysgate("policy", "docs", "oci/agent.json")
    with open(os.path.join(ROOT, "examples", "oci", "agent.json"), encoding="utf-8") as fh:
        assert r.stdout == fh.read()
    r = sysgate("policy", "docs", "../LICENSE")
    assert r.returncode == 2 and r.stderr.count("\n") == 1 and "no shipped example" in r.stderr


def test_version():
    r = sysgate("--version")
    assert (r.returncode, r.stdout) == (0, f"sysgate {__version__}\n")


# --- completion -------------------------------------------------------------------------
def _bash_complete(words: list[str]) -> list[str]:
    """What the generated bash completion offers for ``words`` (the last one under the cursor)."""
    quoted = " ".join("'" + w.replace("'", "'\\''") + "'" for w in words)
    prog = (f"source <({sys.executable} -m sysgate completion bash)\n"
            f"COMP_WORDS=({quoted}); COMP_CWORD={len(words) - 1}; _sysgate\n"
            'printf "%s\\n" "${COMPREPLY[@]}"\n')
    r = subprocess.run(["bash", "-c", prog], capture_output=True, text=True, timeout=60)
    assert r.returncode == 0 and r.stderr == "", r.stderr
    return r.stdout.split()


def test_bash_completion_offers_every_subcommand_and_option():
    root = tree(build_parser())
    for cmd in root.walk():
        words = ["sysgate", *cmd.path]
        options = {s for a in cmd.options for s in a.option_strings}
        assert set(_bash_complete([*words, "-"])) == options, cmd.path
        subs = {c.path[-1] for c in cmd.subcommands}
        if subs:
            assert set(_bash_complete([*words, ""])) == subs, cmd.path
    assert "run" in {c.path[-1] for c in root.subcommands} and "--exit-with-main" in script("bash", root)


def test_bash_completion_values_and_the_supervised_command():
    assert _bash_complete(["sysgate", "policy", "convert", "--to", ""]) == ["text", "oci", "spo", "systemd"]
    assert _bash_complete(["sysgate", "completion", ""]) == ["bash", "zsh"]
    # an option value is skipped when finding the subcommand; after -- it is the command's turn
    assert _bash_complete(["sysgate", "run", "--policy", "run", "--ex"]) == ["--exit-with-main"]
    assert _bash_complete(["sysgate", "run", "--", "ls", "--"]) == []      # ls's own options: files
    assert "sh" in _bash_complete(["sysgate", "run", "--policy", "p", "--", "s"])


def test_zsh_completion_shares_the_tables():
    root = tree(build_parser())
    zsh, bash = script("zsh", root), script("bash", root)
    assert zsh.startswith("#compdef sysgate\n")
    table = bash[bash.index("_sysgate_subcommands()"):bash.index("\n_sysgate() {")]
    assert table in zsh
    if shutil.which("zsh"):                      # not installed here: then only the shared part is checked
        r = subprocess.run(["zsh", "-n"], input=zsh, capture_output=True, text=True)
        assert r.returncode == 0, r.stderr


def test_completion_needs_a_known_shell():
    r = sysgate("completion", "fish")
    assert r.returncode == 2 and "invalid choice" in r.stderr


# --- man page ---------------------------------------------------------------------------
def test_man_page_is_up_to_date():
    """man/sysgate.1 is generated: after changing the CLI run `sysgate manpage -o man/sysgate.1`."""
    with open(os.path.join(ROOT, "man", "sysgate.1"), encoding="utf-8") as fh:
        assert fh.read() == manpage(tree(build_parser()), __version__)
    r = sysgate("manpage")
    assert r.returncode == 0 and r.stdout == manpage(tree(build_parser()), __version__)


def test_man_page_has_every_command_and_option():
    text = manpage(tree(build_parser()), __version__)
    for cmd in list(tree(build_parser()).walk())[1:]:
        assert f'.SS "{" ".join(cmd.path)}"' in text
        for action in cmd.options:
            for opt in action.option_strings:
                assert f"\\fB{opt.replace('-', chr(92) + '-')}\\fR" in text, (cmd.path, opt)


@pytest.mark.skipif(not shutil.which("man"), reason="man is not installed")
def test_man_renders_without_warnings():
    r = subprocess.run(["man", "--warnings", "-l", os.path.join(ROOT, "man", "sysgate.1")],
                       capture_output=True, text=True, timeout=120, env={**os.environ, "MANWIDTH": "80",
                                                                          "MANPAGER": "cat", "PAGER": "cat"})
    assert r.returncode == 0 and r.stderr == "", r.stderr
    assert "sysgate run" in r.stdout and "exit-with-main" in r.stdout


# --- the wheel ----------------------------------------------------------------------------
def _wheel_python():
    """An interpreter that can build a wheel offline (setuptools and wheel installed)."""
    for py in (sys.executable, shutil.which("python3"), "/usr/bin/python3"):
        if py and os.path.exists(py) and subprocess.run([py, "-c", "import setuptools, wheel"],
                                                        capture_output=True).returncode == 0:
            return py
    return None


@pytest.mark.skipif(_wheel_python() is None, reason="no interpreter with setuptools and wheel")
def test_wheel_carries_the_licence_the_docs_and_py_typed(tmp_path):
    src = tmp_path / "src"
    shutil.copytree(ROOT, src, ignore=shutil.ignore_patterns(".git", ".venv", "build", "*.egg-info", "__pycache__",
                                                            ".hypothesis", "tests"))
    subprocess.run([_wheel_python(), "-m", "pip", "wheel", str(src), "-w", str(tmp_path / "whl"), "--no-deps",
                    "--no-build-isolation", "-q"], check=True, capture_output=True, timeout=300)
    (whl,) = (tmp_path / "whl").iterdir()
    with zipfile.ZipFile(whl) as z:
        names = z.namelist()
        info = next(n.split("/")[0] for n in names if n.endswith(".dist-info/METADATA"))
        with open(os.path.join(ROOT, "LICENSE"), "rb") as fh:
            assert z.read(f"{info}/LICENSE") == fh.read()
        assert "License-File: LICENSE" in z.read(f"{info}/METADATA").decode()
        for f in _files(SHIPPED):
            assert f"sysgate/docs/examples/{f}" in names
        assert "sysgate/py.typed" in names          # type checkers read the package's annotations
    with open(os.path.join(ROOT, "LICENSE"), encoding="utf-8") as fh:
        text = fh.read()
    assert "Apache License" in text and "Version 2.0, January 2004" in text and "END OF TERMS AND CONDITIONS" in text
