"""The CLI says and does the same thing everywhere: -v/-q before or after the command, --json
FILE (- for stdout) wherever there is JSON, a pin or a kernel name refused before anything
runs and without leaving an artifact folder, no option accepted and ignored, grouped --help,
and a reader that stops reading (``| head``) is no error."""
import json
import logging
import os
import subprocess
import sys
from pathlib import Path

import pytest

from livepatch_lab import cli
from livepatch_lab.cli import parser as cliparser
from livepatch_lab.core.errors import HostCommandError
from livepatch_lab.core.settings import Settings
from livepatch_lab.lab import runner
from livepatch_lab.supply import apt
from livepatch_lab.supply.kernels import defs as kerneldefs, fetch as kernelfetch
from tests.unit.fakes.kernels import bookworm_archive, fake_cached

ROOT = Path(__file__).resolve().parents[2]
GOOD_PATCH = str(ROOT / "scenarios" / "patches" / "good")
GOOD_SCENARIO = str(ROOT / "scenarios" / "good.yaml")


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
    assert logging.getLogger("livepatch_lab").level == level


def test_every_command_takes_the_global_options_after_it_too(tmp_path):
    for name, sub in _subcommands():
        options = {o for a in sub._actions for o in a.option_strings}
        assert {"-v", "-q", "--cache-dir"} <= options, name
    args = cliparser.build_parser().parse_args(["kernels", "--cache-dir", str(tmp_path)])
    assert args.cache_dir == str(tmp_path)
    args = cliparser.build_parser().parse_args(["--cache-dir", str(tmp_path), "image", "build"])
    assert args.cache_dir == str(tmp_path)   # not reset by the command's own


# --- --json FILE, - for stdout ----------------------------------------------------------------

def test_every_json_option_takes_a_file_or_a_dash():
    found = []
    for name, sub in _subcommands():
        for action in sub._actions:
            if "--json" in action.option_strings:
                found.append(name)
                assert action.nargs is None and action.metavar == "FILE", name   # a value, not a flag
                assert "- for stdout" in action.help, name
    assert {"kernels", "cache", "check", "soak", "run", "selftests"} <= set(found)


def test_kernels_json_goes_to_a_file_or_with_a_dash_to_stdout(tmp_path, capsys):
    out = tmp_path / "sub" / "k.json"
    assert cli.main(["--cache-dir", str(tmp_path), "kernels", "--offline", "--json", str(out)]) == 0
    listed = json.loads(out.read_text())
    assert "debian-6.1" in {k["name"] for k in listed}
    assert "KERNEL" in capsys.readouterr().out          # the table still on stdout

    assert cli.main(["--cache-dir", str(tmp_path), "kernels", "--offline", "--json", "-"]) == 0
    captured = capsys.readouterr()
    assert json.loads(captured.out) == listed           # stdout is the JSON alone
    assert "KERNEL" in captured.err


def test_a_json_file_that_cannot_be_written_is_refused_before_the_command_runs(tmp_path, capsys):
    blocker = tmp_path / "file"
    blocker.write_text("")
    for command in (["kernels", "--offline"], ["cache"]):
        assert cli.main(["--cache-dir", str(tmp_path / "c"), *command, "--json", str(blocker / "k.json")]) == 2
        assert "[--json]" in capsys.readouterr().err


# --- pins --------------------------------------------------------------------------------------

@pytest.fixture
def archive(monkeypatch):
    """The bookworm lists as they are kept, without the network: 6.1.176-1, 6.1.192-1 and -2."""
    monkeypatch.setattr(apt, "update", lambda root, **kw: False)
    monkeypatch.setattr(apt, "packages", lambda root, want=None: bookworm_archive())


@pytest.fixture
def nothing_runs(monkeypatch):
    def run(*a, **kw):
        raise AssertionError("a run started")
    monkeypatch.setattr(runner, "run", run)
    from livepatch_lab.lab.selftests import suite
    monkeypatch.setattr(suite, "run_line", run)


@pytest.mark.parametrize("command", [["check", GOOD_PATCH], ["soak", GOOD_PATCH], ["run", GOOD_SCENARIO],
                                     ["selftests"]])
def test_a_pin_the_archive_does_not_list_is_refused_naming_it_and_what_there_is(
        command, archive, nothing_runs, tmp_path, monkeypatch, capsys):
    monkeypatch.chdir(tmp_path)
    rc = cli.main(["--cache-dir", str(tmp_path / "cache"), *command, "--kernel", "debian-6.1@9.9.9-1"])
    err = capsys.readouterr().err
    assert rc == 2
    assert "debian-6.1@9.9.9-1" in err and "6.1.192-2" in err
    assert not (tmp_path / "lab-artifacts").exists()


def test_a_pin_the_archive_lists_or_the_cache_holds_goes_through(archive, tmp_path, monkeypatch):
    s = Settings(cache_dir=tmp_path)
    kernelfetch.check_pin(kerneldefs.get_definition("debian-6.1@6.1.192-1"), s)   # in the lists
    pinned = kerneldefs.get_definition("debian-6.1@6.1.150-1")
    fake_cached(s, pinned, "6.1.150-1", "6.1.0-40-amd64")

    def offline(*a, **kw):
        raise AssertionError("looked up a pin the cache holds")
    monkeypatch.setattr(apt, "packages", offline)
    kernelfetch.check_pin(pinned, s)   # the cache answers: no look-up


def test_a_pin_that_cannot_be_looked_up_is_an_error_saying_so(nothing_runs, tmp_path, monkeypatch, capsys):
    def unreachable(root, **kw):
        raise HostCommandError("apt-get update (bookworm)", ["apt-get", "update"], 100,
                               "Could not resolve 'deb.debian.org'")
    monkeypatch.setattr(apt, "update", unreachable)
    monkeypatch.chdir(tmp_path)
    rc = cli.main(["--cache-dir", str(tmp_path / "cache"), "check", GOOD_PATCH, "--kernel", "debian-6.1@6.1.1-1"])
    err = capsys.readouterr().err
    assert rc == 2
    assert "cannot check the pin debian-6.1@6.1.1-1 against the archive" in err and "resolve" in err
    assert not (tmp_path / "lab-artifacts").exists()


# --- no litter -----------------------------------------------------------------------------------

@pytest.mark.parametrize("argv", [
    ["check", GOOD_PATCH, "--kernel", "debian-6.9"],
    ["run", GOOD_SCENARIO, "--kernel", "debian-6.9"],
    ["selftests", "--kernel", "debian-6.9"],
    ["run", "no-such-scenario.yaml"],
    ["check", GOOD_PATCH, "--json", "{file}/v.json"],
    ["check", GOOD_PATCH, "--report", "{file}"],
    ["selftests", "--json", "{file}/v.json"],
])
def test_a_refused_command_leaves_no_artifact_folder(argv, nothing_runs, tmp_path, monkeypatch, capsys):
    monkeypatch.chdir(tmp_path)
    (tmp_path / "file").write_text("")
    argv = [a.replace("{file}", str(tmp_path / "file")) for a in argv]
    assert cli.main(["--cache-dir", str(tmp_path / "cache"), *argv]) == 2
    assert not (tmp_path / "lab-artifacts").exists()


def test_boot_refused_leaves_no_artifacts_dir(tmp_path, capsys):
    art = tmp_path / "art"
    assert cli.main(["--cache-dir", str(tmp_path / "cache"), "boot", "debian-6.9", "--artifacts", str(art)]) == 2
    assert not art.exists()


# --- nothing accepted and ignored -------------------------------------------------------------

def test_selftests_refuses_report_rather_than_ignoring_it(capsys):
    with pytest.raises(SystemExit) as exit_:
        cli.main(["selftests", "--report", "r"])
    assert exit_.value.code == 2
    assert "--report" in capsys.readouterr().err


# --- grouped --help ----------------------------------------------------------------------------

@pytest.mark.parametrize("command, groups", [
    ("check", {"what to test": {"patch", "--probe", "--sig-enforce"}, "where": {"--kernel", "--accel", "--debug"},
               "outputs": {"--json", "--artifacts", "--report"},
               "backends": {"--backend", "--libvirt-uri", "--no-snapshots"}}),
    ("soak", {"what to test": {"patch", "--cycles"}, "where": {"--kernel"}, "outputs": {"--json", "--report"},
              "backends": {"--backend"}}),
    ("run", {"what to test": {"scenario"}, "where": {"--kernel", "--debug"}, "outputs": {"--json", "--report"},
             "backends": {"--backend"}}),
    ("selftests", {"what to test": {"--script", "--extra-script"}, "where": {"--kernel", "--cpus"},
                   "outputs": {"--json", "--artifacts"}, "backends": {"--backend"}}),
    ("boot", {"what to run": {"kernel", "command"}, "where": {"--accel", "--memory"},
              "outputs": {"--artifacts"}, "backends": {"--backend"}}),
])
def test_help_of_the_commands_that_run_is_grouped(command, groups):
    sub = dict(_subcommands())[command]
    shown = {g.title: {a.option_strings[0] if a.option_strings else a.dest for a in g._group_actions}
             for g in sub._action_groups}
    for title, members in groups.items():
        assert members <= shown.get(title, set()), (title, shown.get(title))
    assert f"{next(iter(groups))}:" in sub.format_help()


# --- a closed pipe -------------------------------------------------------------------------------

def _lab(args, tmp_path, **kw):
    env = {**os.environ, "LIVEPATCH_LAB_CACHE": str(tmp_path / "cache")}
    return subprocess.run([sys.executable, "-m", "livepatch_lab.cli", *args], cwd=ROOT, env=env,
                          stderr=subprocess.PIPE, text=True, timeout=60, **kw)


@pytest.mark.parametrize("json_arg", [[], ["--json", "-"]])
def test_a_reader_that_stopped_reading_ends_the_command_quietly(json_arg, tmp_path):
    """``kernels | head -2``: stdout's reader is gone before the lab writes; nothing on stderr."""
    read, write = os.pipe()
    os.close(read)
    try:
        done = _lab(["kernels", "--offline", *json_arg], tmp_path, stdout=write)
    finally:
        os.close(write)
    if json_arg:   # the table went to stderr, and nothing else
        assert done.stderr.startswith("KERNEL") and "Broken" not in done.stderr
    else:
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


# --- the sign-off page from saved runs ----------------------------------------------------------

def test_report_makes_the_page_from_saved_runs_with_its_title_and_refuses_a_path_that_is_no_folder(
        tmp_path, capsys):
    from tests.unit.signoff_runs import make_run
    saved = tmp_path / "lab-artifacts" / "20261207-120000"
    make_run(saved, "good", "debian-6.1")
    make_run(saved, "slow", "debian-7", verdict="fail", slow=0.2)
    out = tmp_path / "report"
    assert cli.main(["--cache-dir", str(tmp_path / "c"), "report", str(saved), "--out", str(out),
                     "--title", "lab_good 1.2-3", "--note", "for SEC-42"]) == 0
    assert f"report: {out / 'index.html'} (manifest sha256 " in capsys.readouterr().out
    page = (out / "index.html").read_text()
    assert "lab_good 1.2-3" in page and "for SEC-42" in page
    assert cli.main(["--cache-dir", str(tmp_path / "c"), "verify", str(out)]) == 0
    assert cli.main(["--cache-dir", str(tmp_path / "c"), "report", str(tmp_path / "nothing"), "--out",
                     str(tmp_path / "r2")]) == 2
    assert "is not a directory" in capsys.readouterr().err and not (tmp_path / "r2").exists()
