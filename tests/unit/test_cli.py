"""The CLI's surface: parsing, exit codes, errors that name the bad input."""
import json

import pytest

from livepatch_lab import cli
from livepatch_lab.cli import commands, parser as cliparser, runs
from livepatch_lab.cli.settings import settings_for


def test_boot_takes_everything_after_a_double_dash_as_the_guest_command(monkeypatch):
    seen = {}
    monkeypatch.setattr(commands, "cmd_boot", lambda args: seen.update(vars(args)) or 0)
    parser = cli.build_parser
    monkeypatch.setattr(cli, "build_parser", lambda: _with_boot(parser(), commands.cmd_boot))
    assert cli.main(["boot", "debian-6.1", "--artifacts", "/tmp/a", "--", "ls", "-l", "--", "x"]) == 0
    assert seen["kernel"] == "debian-6.1" and seen["artifacts"] == "/tmp/a"
    assert seen["command"] == ["ls", "-l", "--", "x"]


@pytest.mark.parametrize("argv, on", [(["boot", "debian-6.1"], True),
                                      (["boot", "--no-snapshots", "debian-6.1"], False),
                                      (["run", "--no-snapshots", "s.yaml"], False),
                                      (["check", "--no-snapshots", "p.ko"], False)])
def test_no_snapshots_makes_every_guest_boot(argv, on, tmp_path):
    args = cliparser.build_parser().parse_args(["--cache-dir", str(tmp_path), *argv])
    assert settings_for(args).snapshots is on


def _with_boot(parser, func):
    parser._subparsers._group_actions[0].choices["boot"].set_defaults(func=func)
    return parser


def test_an_unknown_kernel_is_a_usage_error_naming_it_and_the_known_ones(capsys, tmp_path):
    rc = cli.main(["--cache-dir", str(tmp_path), "fetch", "debian-99"])
    err = capsys.readouterr().err
    assert rc == 2
    assert "debian-99" in err and "debian-6.1" in err


def test_a_bad_environment_value_is_a_usage_error_naming_the_variable(capsys, monkeypatch, tmp_path):
    monkeypatch.setenv("LIVEPATCH_LAB_MEMORY_MIB", "lots")
    rc = cli.main(["--cache-dir", str(tmp_path), "kernels", "--offline"])
    assert rc == 2
    assert "LIVEPATCH_LAB_MEMORY_MIB" in capsys.readouterr().err


def test_kernels_offline_lists_every_definition_without_touching_the_network(capsys, tmp_path):
    assert cli.main(["--cache-dir", str(tmp_path), "kernels", "--offline"]) == 0
    out = capsys.readouterr().out
    for name in ("debian-5.10", "debian-6.1", "debian-6.12", "debian-7"):
        assert name in out


def test_doctor_reports_every_check(capsys, tmp_path):
    rc = cli.main(["--cache-dir", str(tmp_path), "doctor"])
    out = capsys.readouterr().out
    failed = [line for line in out.splitlines() if line.startswith("FAIL")]
    assert rc == (1 if failed else 0), out   # exit 1 exactly when a check failed, and it is named
    for name in ("qemu-system-x86_64", "tcg-threads", "qemu-img", "kvm", "mmdebstrap", "busybox", "gcc",
                 "mirror", "cache"):
        assert name in out


@pytest.mark.parametrize("argv", [["boot"], ["nonsense"], ["image"]])
def test_usage_errors_exit_2(argv):
    with pytest.raises(SystemExit) as exc:
        cli.main(argv)
    assert exc.value.code == 2


def test_an_unusable_cache_directory_is_one_line_naming_the_option(capsys, tmp_path):
    ro = tmp_path / "file-not-dir"
    ro.write_text("")
    for where in ("/proc/nope", str(ro / "sub")):
        assert cli.main(["--cache-dir", where, "kernels"]) == 2
        err = capsys.readouterr().err.strip().splitlines()
        assert len(err) == 1 and "[--cache-dir]: cannot use" in err[0] and where in err[0]
        assert "Traceback" not in err[0]


def _outcome(kernel: str, verdict: str, tmp_path):
    from livepatch_lab.lab.report.outcome import Outcome
    from livepatch_lab.lab.run.record import Reason
    from livepatch_lab.lab.judge.verdict import Verdict
    reasons = [Reason("error", "interrupted (signal 15): the run was stopped before its verdict")] \
        if verdict == "error" else []
    return Outcome("good", kernel, Verdict(verdict, reasons, {}), {"name": kernel}, [],
                   str(tmp_path / "art" / kernel))


@pytest.mark.parametrize("command", ["check", "run"])
def test_an_interrupt_mid_matrix_keeps_the_finished_verdicts_and_the_interrupted_one_then_exits_130(
        command, capsys, monkeypatch, tmp_path):
    """Ctrl-C or SIGTERM while the second kernel's guest runs: the first kernel's verdict and the
    interrupted run (an error) are in the JSON, and the exit status says interrupted."""
    from livepatch_lab.lab import runner

    def run(sc, kernel, settings, out_dir):
        if kernel == "debian-6.1":
            return _outcome(kernel, "pass", tmp_path)
        raise runner.Interrupted(_outcome(kernel, "error", tmp_path), KeyboardInterrupt("signal 15"))
    monkeypatch.setattr(runner, "run", run)
    target = (["check", "scenarios/patches/good"] if command == "check" else ["run", "scenarios/good.yaml"])
    rc = cli.main(["--cache-dir", str(tmp_path / "cache"), *target, "--kernel", "debian-6.1",
                   "--kernel", "debian-5.10", "--json", str(tmp_path / "v.json"),
                   "--artifacts", str(tmp_path / "art")])
    assert rc == 130
    doc = json.loads((tmp_path / "v.json").read_text())
    assert [(r["kernel"], r["verdict"]) for r in doc["results"]] == [("debian-6.1", "pass"),
                                                                     ("debian-5.10", "error")]
    assert "interrupted" in capsys.readouterr().err


def test_check_applies_with_the_tool_it_is_given(monkeypatch, tmp_path):
    (tmp_path / "p").mkdir()
    (tmp_path / "p" / "Makefile").write_text("obj-m += p.o\n")
    seen = []
    monkeypatch.setattr(runs, "_run_matrix", lambda scs, kernels, args, **_: seen.extend(scs) or 0)
    assert cli.main(["check", str(tmp_path / "p"), "--apply-with", "kpatch"]) == 0
    assert seen[0].apply.tool == "kpatch" and seen[0].image.name == "kpatch.yaml"
    with pytest.raises(SystemExit) as exit_:
        cli.main(["check", str(tmp_path / "p"), "--apply-with", "ksplice"])
    assert exit_.value.code == 2
