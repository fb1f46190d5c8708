"""The CLI says and does the same thing everywhere: -v/-q before or after the command, and a
reader that stops reading (``| head``) is no error."""
import logging
import os
import subprocess
import sys
from pathlib import Path

import pytest

from harness import cli
from harness.cli import parser as cliparser

ROOT = Path(__file__).resolve().parents[2]


def _subcommands(parser=None):
    parser = parser or cliparser.build_parser()
    for name, sub in parser._subparsers._group_actions[0].choices.items():
        if sub._subparsers is None:
            yield name, sub
        else:
            yield from ((f"{name} {n}", s) for n, s in _subcommands(sub))


# --- -v and -q ------------------------------------------------------------------------------

@pytest.mark.parametrize("before, after, level", [
    ([], [], logging.INFO),                 # the default: progress lines
    (["-v"], [], logging.DEBUG),            # -v is one more: the debug lines
    ([], ["-v"], logging.DEBUG),            # ... after the command too
    ([], ["-vv"], logging.DEBUG),           # -vv is harmless
    (["-q"], [], logging.WARNING),
    ([], ["-q"], logging.WARNING),          # once only accepted before the command
    ([], ["-qq"], logging.ERROR),
    (["-q"], ["-q"], logging.ERROR),        # before and after add up
    (["-v"], ["-q"], logging.INFO),
])
def test_v_and_q_mean_more_and_less_than_the_default_before_or_after_the_command(before, after, level,
                                                                                 tmp_path, capsys):
    assert cli.main([*before, "--cache-dir", str(tmp_path), "kernels", "--offline", *after]) == 0
    assert logging.getLogger("harness").level == level


def test_every_command_takes_the_global_options_after_it_too(tmp_path):
    for name, sub in _subcommands():
        options = {o for a in sub._actions for o in a.option_strings}
        assert {"-v", "-q", "--cache-dir"} <= options, name
    args = cliparser.build_parser().parse_args(["kernels", "--cache-dir", str(tmp_path)])
    assert args.cache_dir == str(tmp_path)
    args = cliparser.build_parser().parse_args(["--cache-dir", str(tmp_path), "image", "build"])
    assert args.cache_dir == str(tmp_path)   # not reset by the command's own


# --- a closed pipe -------------------------------------------------------------------------------

def _lab(args, tmp_path, **kw):
    env = {**os.environ, "LIVEPATCH_LAB_CACHE": str(tmp_path / "cache")}
    return subprocess.run([sys.executable, "-m", "harness.cli", *args], cwd=ROOT, env=env,
                          stderr=subprocess.PIPE, text=True, timeout=60, **kw)


def test_a_reader_that_stopped_reading_ends_the_command_quietly(tmp_path):
    """``kernels | head -2``: stdout's reader is gone before the lab writes; nothing on stderr."""
    read, write = os.pipe()
    os.close(read)
    try:
        done = _lab(["kernels", "--offline"], tmp_path, stdout=write)
    finally:
        os.close(write)
    assert done.stderr == ""
    assert done.returncode == cli.EXIT_PIPE


def test_a_broken_pipe_that_is_not_stdout_stays_an_error(monkeypatch, tmp_path, capsys):
    def broken(args):
        raise BrokenPipeError(32, "Broken pipe")
    parser = cliparser.build_parser()
    dict(_subcommands(parser))["kernels"].set_defaults(func=broken)
    monkeypatch.setattr(cli, "build_parser", lambda: parser)
    assert cli.main(["--cache-dir", str(tmp_path), "kernels"]) == 2
    assert "Broken pipe" in capsys.readouterr().err
