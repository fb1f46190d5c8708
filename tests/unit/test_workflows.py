"""The GitHub Actions files under .github/: actionlint-clean, complete, and the lint able to fail.

actionlint comes from the ``test`` extra (``pip install -e '.[test]'``). It only lints
workflow files, and only those in a ``.github/workflows/`` folder, so the example callers (the
one under .github/examples/ and examples/vendor-repo's) are copied into one; the composite action
is checked here by structure. With shellcheck on PATH, actionlint also lints the shell of every
``run:``. The scripts that decide something (the kernel list made a matrix, the verdicts gathered,
the action's inputs checked and turned into a command line) are run here as the runner runs them,
with a fake ``sudo`` and a fake ``livepatch-lab``.
"""
from __future__ import annotations

import json
import os
import re
import shutil
import subprocess
import sys
from pathlib import Path
from typing import Optional

import pytest
import yaml

ROOT = Path(__file__).resolve().parents[2]
GITHUB = ROOT / ".github"
WORKFLOWS = sorted((GITHUB / "workflows").glob("*.yml"))
VENDOR_REPO = ROOT / "examples" / "vendor-repo"
EXAMPLES = sorted([*(GITHUB / "examples").glob("*.yml"), *(VENDOR_REPO / ".github" / "workflows").glob("*.yml")])
ACTION = GITHUB / "actions" / "validate-livepatch" / "action.yml"
REUSABLE = GITHUB / "workflows" / "validate-livepatch.yml"
SELF_TEST = GITHUB / "workflows" / "self-test.yml"


@pytest.fixture(scope="module")
def actionlint() -> str:
    # the venv's bin first: pytest may run as .venv/bin/python without the venv on PATH
    path = os.pathsep.join([str(Path(sys.executable).parent), os.environ.get("PATH", "")])
    found = shutil.which("actionlint", path=path)
    if not found:
        pytest.fail("actionlint is not installed: these tests need the test extra "
                    "(pip install -e '.[test]'; lab.sh installs it)", pytrace=False)
    return found


def lint(actionlint: str, *files: Path, cwd: Path = ROOT) -> subprocess.CompletedProcess:
    return subprocess.run([actionlint, "-no-color", "-oneline", *map(str, files)], cwd=cwd,
                          capture_output=True, text=True, timeout=120)


def load(path: Path) -> dict:
    # PyYAML reads the key "on" as True; workflows here only need it present
    return yaml.safe_load(path.read_text())


def test_the_workflows_exist():
    assert {p.name for p in WORKFLOWS} >= {"matrix.yml", "validate-livepatch.yml", "self-test.yml"}
    assert {p.name for p in EXAMPLES} >= {"patch-repo-ci.yml", "livepatch.yml"} and ACTION.is_file()


@pytest.mark.parametrize("workflow", WORKFLOWS, ids=lambda p: p.name)
def test_workflow_passes_actionlint(actionlint, workflow):
    r = lint(actionlint, workflow.relative_to(ROOT))
    assert r.returncode == 0, r.stdout + r.stderr


@pytest.mark.parametrize("example", EXAMPLES, ids=lambda p: str(p.relative_to(ROOT)))
def test_example_caller_passes_actionlint(actionlint, example, tmp_path):
    (tmp_path / ".git").mkdir()  # actionlint looks for a repository root
    dest = tmp_path / ".github" / "workflows" / example.name
    dest.parent.mkdir(parents=True)
    shutil.copy(example, dest)
    r = lint(actionlint, dest.relative_to(tmp_path), cwd=tmp_path)
    assert r.returncode == 0, r.stdout + r.stderr


REMOTE = re.compile(r"[\w-]+/[\w-]+/(\.github/(?:workflows/validate-livepatch\.yml|actions/validate-livepatch))@\S+")


@pytest.mark.parametrize("example", EXAMPLES, ids=lambda p: str(p.relative_to(ROOT)))
def test_example_callers_match_the_reusable_workflows_and_actions_interface(actionlint, example, tmp_path):
    """actionlint cannot read a remote workflow's inputs and outputs: the example's calls are
    pointed at copies of this repository's workflow and action, so that a misspelt input or an
    output the workflow does not have fails here."""
    (tmp_path / ".git").mkdir()
    dest = tmp_path / ".github" / "workflows" / example.name
    dest.parent.mkdir(parents=True)
    shutil.copy(REUSABLE, dest.parent / REUSABLE.name)
    (tmp_path / ".github" / "actions" / "validate-livepatch").mkdir(parents=True)
    shutil.copy(ACTION, tmp_path / ".github" / "actions" / "validate-livepatch" / "action.yml")
    text, calls = REMOTE.subn(r"./\1", example.read_text())
    assert calls, f"{example.name} calls neither the reusable workflow nor the action"
    dest.write_text(text)
    r = lint(actionlint, dest.relative_to(tmp_path), cwd=tmp_path)
    assert r.returncode == 0, r.stdout + r.stderr


def test_actionlint_catches_a_broken_workflow(actionlint, tmp_path):
    """The check can fail: a job without runs-on and an unknown context are reported."""
    (tmp_path / ".git").mkdir()
    bad = tmp_path / ".github" / "workflows" / "broken.yml"
    bad.parent.mkdir(parents=True)
    bad.write_text("on: push\n"
                   "jobs:\n"
                   "  build:\n"
                   "    steps:\n"
                   "      - run: echo ${{ github.no_such_field }}\n")
    r = lint(actionlint, bad.relative_to(tmp_path), cwd=tmp_path)
    assert r.returncode != 0
    assert '"runs-on" section is missing in job "build"' in r.stdout, r.stdout + r.stderr
    assert "no_such_field" in r.stdout, r.stdout + r.stderr


def test_the_matrix_names_every_defined_kernel():
    """Adding kernels/NAME.yaml without a CI job for it (or the reverse) fails here."""
    defined = {load(p).get("name", p.stem) for p in (ROOT / "kernels").glob("*.yaml")}
    assert defined, "no kernels/*.yaml"
    jobs = load(GITHUB / "workflows" / "matrix.yml")["jobs"]
    matrices = [j["strategy"]["matrix"] for j in jobs.values() if "strategy" in j]
    in_ci = {k for m in matrices for k in m.get("kernel", [])}
    assert in_ci == defined, f"CI kernels {sorted(in_ci)} != kernels/*.yaml {sorted(defined)}"
    assert all(j["strategy"].get("fail-fast") is False for j in jobs.values() if "strategy" in j)


def test_matrix_jobs_have_timeouts_and_read_only_permissions():
    for wf in WORKFLOWS:
        doc = load(wf)
        assert doc.get("permissions") == {"contents": "read"}, wf.name
        for name, job in doc["jobs"].items():
            if "uses" not in job:
                assert "timeout-minutes" in job, f"{wf.name}: job {name} has no timeout-minutes"


def test_composite_action_structure():
    action = load(ACTION)
    for key in ("name", "description", "inputs", "outputs", "runs"):
        assert key in action, key
    assert action["runs"]["using"] == "composite"
    steps = action["runs"]["steps"]
    assert steps and all("uses" in s or ("run" in s and "shell" in s) for s in steps)
    # a patch (check) or scenario files (run): neither is required on its own, Prepare wants one
    assert not action["inputs"]["patch-dir"].get("required") and not action["inputs"]["scenarios"].get("required")
    assert set(action["inputs"]) >= {"patch-dir", "scenarios", "working-directory", "kernels", "probe",
                                      "expect-patched", "duration", "upgrade-from", "params", "apply-with",
                                      "target-module"}
    assert "verdict" in action["outputs"]
    # the lab is the action's own checkout, never the caller's workspace
    assert "github.action_path" in ACTION.read_text()


def test_composite_action_installs_the_lab_with_pip_and_setup_not_lab_sh():
    """lab.sh install brings the lab's own test tools (chromium: a snap on Ubuntu); the action
    pip-installs the checkout into a venv and lets `livepatch-lab setup` name the packages."""
    install = step(load(ACTION)["runs"]["steps"], "Install livepatch-lab")["run"]
    scripts = "\n".join(s.get("run", "") for s in load(ACTION)["runs"]["steps"])
    assert "lab.sh" not in scripts and "apt-get install" not in scripts.replace(
        "sudo apt-get install -y -qq python3-venv", "")   # the one package setup cannot install: its own venv
    assert re.search(r'-m pip install -q "\$LAB"', install), install
    assert re.search(r'sudo "\$VENV/bin/livepatch-lab" setup$', install, re.M), install
    assert "--test" not in install and "--libvirt" not in install
    # every later use of the lab is the venv's, never a checkout's .venv
    assert ".venv/" not in scripts


def test_composite_action_caches_the_lab_per_kernel_and_lab_version():
    steps = load(ACTION)["runs"]["steps"]
    (cache,) = [s for s in steps if s.get("uses", "").startswith("actions/cache@")]
    assert cache["with"]["path"] == "~/.cache/livepatch-lab"
    key = cache["with"]["key"]
    for part in ("runner.os", "steps.prep.outputs.kernels", "steps.prep.outputs.ref", "steps.prep.outputs.week"):
        assert part in key, key
    # a new lab version starts from the same kernels' last cache; never another kernel's
    restore = cache["with"]["restore-keys"].splitlines()
    assert restore and all("steps.prep.outputs.kernels" in k for k in restore), restore
    # the cache the lab writes is the one restored and saved
    assert "LIVEPATCH_LAB_CACHE=$HOME/.cache/livepatch-lab" in step(steps, "Prepare")["run"]


def test_composite_action_references_only_its_inputs_and_keeps_them_out_of_scripts():
    action = load(ACTION)
    used = set(re.findall(r"\binputs\.([A-Za-z0-9_-]+)", ACTION.read_text()))
    assert used <= set(action["inputs"]), used - set(action["inputs"])
    # an expression spliced into a script is a script-injection hole; inputs go through env
    for step in action["runs"]["steps"]:
        assert "${{" not in step.get("run", ""), step.get("name")


def test_no_workflow_splices_an_expression_into_a_script():
    # ${{ }} in a run: is pasted into the script before the shell sees it (script injection);
    # values go through env: and are quoted by the shell
    for path in [*WORKFLOWS, *EXAMPLES]:
        for name, job in load(path)["jobs"].items():
            for step in job.get("steps", []):
                assert "${{" not in step.get("run", ""), f"{path.name}: {name}: {step.get('name')}"


def test_reusable_workflow_interface():
    call = load(REUSABLE)[True]["workflow_call"]
    assert not call["inputs"]["patch-dir"].get("required") and not call["inputs"]["scenarios"].get("required")
    assert call["inputs"]["kernels"]["default"] == "debian-6.1"
    assert set(call["inputs"]) >= {"probe", "expect-patched", "duration", "upgrade-from", "params", "apply-with",
                                    "target-module", "lab-repository", "lab-ref"}
    assert {"verdict", "verdicts"} <= set(call["outputs"])
    # its steps are the composite action's: what it passes must be the action's inputs
    steps = load(REUSABLE)["jobs"]["validate"]["steps"]
    uses = [s for s in steps if s.get("uses", "").endswith("/.github/actions/validate-livepatch")]
    assert len(uses) == 1
    assert set(uses[0]["with"]) <= set(load(ACTION)["inputs"])
    # and every input of the workflow reaches the action or a step of its own: none is dropped
    text = REUSABLE.read_text()
    dropped = [name for name in call["inputs"] if f"inputs.{name} }}}}" not in text]
    assert not dropped, f"inputs never used: {dropped}"
    passed = uses[0]["with"]
    for name in ("patch-dir", "scenarios", "probe", "expect-patched", "duration", "upgrade-from", "params",
                 "apply-with", "target-module"):
        assert passed.get(name) == f"${{{{ inputs.{name} }}}}", name
    # the caller's paths stay relative to its checkout: the action resolves them there
    assert passed["working-directory"] == "patch-repo"
    checkout = next(s for s in steps if s.get("uses", "").startswith("actions/checkout@") and "repository" not in
                    s.get("with", {}))
    assert checkout["with"]["path"] == "patch-repo"


def test_reusable_workflow_fans_the_kernels_out_one_job_each():
    jobs = load(REUSABLE)["jobs"]
    assert list(jobs) == ["kernels", "validate", "verdict"]
    validate = jobs["validate"]
    assert validate["needs"] == "kernels"
    assert validate["strategy"]["matrix"] == "${{ fromJSON(needs.kernels.outputs.matrix) }}"
    assert validate["strategy"]["fail-fast"] is False
    assert jobs["kernels"]["outputs"]["matrix"] == "${{ steps.list.outputs.matrix }}"
    action = next(s for s in validate["steps"] if s.get("uses", "").endswith("/validate-livepatch"))
    # one kernel per job, its artifacts named after it
    assert action["with"]["kernels"] == "${{ matrix.kernel }}"
    assert action["with"]["artifact-name"] == "${{ inputs.artifact-name }}-${{ matrix.slug }}"
    uploads = [s for s in validate["steps"] if s.get("uses", "").startswith("actions/upload-artifact@")]
    assert uploads and all("matrix.slug" in s["with"]["name"] for s in uploads)
    assert all(s.get("if") == "always()" for s in uploads)
    # the verdicts are gathered even when a kernel's job failed
    verdict = jobs["verdict"]
    assert set(verdict["needs"]) == {"kernels", "validate"} and verdict["if"] == "always()"
    download = next(s for s in verdict["steps"] if s.get("uses", "").startswith("actions/download-artifact@"))
    assert download["with"]["pattern"] == "${{ inputs.artifact-name }}-verdict-*"
    assert download.get("continue-on-error") is True   # nothing to download: the gathering says error
    assert uploads[0]["with"]["name"] == "${{ inputs.artifact-name }}-verdict-${{ matrix.slug }}"


def test_the_self_test_workflow_calls_the_reusable_one_on_this_commit():
    doc = load(SELF_TEST)
    call = load(REUSABLE)[True]["workflow_call"]["inputs"]
    callers = {name: job for name, job in doc["jobs"].items() if "uses" in job}
    assert len(callers) >= 2
    kinds = set()
    for name, job in callers.items():
        assert job["uses"] == "./.github/workflows/validate-livepatch.yml", name
        assert set(job["with"]) <= set(call), name
        # this commit's lab, not a released one
        assert job["with"]["lab-repository"] == "${{ github.repository }}", name
        assert job["with"]["lab-ref"] == "${{ github.sha }}", name
        names = [k for k in re.split(r"[\s,]+", job["with"]["kernels"]) if k]
        assert 1 <= len(names) <= 2, name
        # what it validates exists in this repository
        for path in job["with"].get("scenarios", "").split():
            assert (ROOT / path).is_file(), f"{name}: {path}"
        if job["with"].get("patch-dir"):
            assert (ROOT / job["with"]["patch-dir"] / "Kbuild").is_file(), name
        kinds |= {k for k in ("scenarios", "patch-dir") if job["with"].get(k)}
        artifact = job["with"].get("artifact-name")
        assert artifact, f"{name}: two calls in one run need artifact names of their own"
    assert kinds == {"scenarios", "patch-dir"}
    assert any(j["with"].get("scenarios", "").startswith("examples/vendor-repo/") for j in callers.values())


def test_the_vendor_repos_workflow_calls_the_reusable_workflow_with_its_own_files():
    (workflow,) = (VENDOR_REPO / ".github" / "workflows").glob("*.yml")
    call = load(REUSABLE)[True]["workflow_call"]["inputs"]
    callers = {n: j for n, j in load(workflow)["jobs"].items() if "uses" in j}
    assert callers
    for name, job in callers.items():
        assert re.fullmatch(r"[\w-]+/[\w-]+/\.github/workflows/validate-livepatch\.yml@\S+", job["uses"]), name
        assert set(job["with"]) <= set(call), name
        for path in job["with"].get("scenarios", "").split():
            assert (VENDOR_REPO / path).is_file(), f"{name}: {path}"
        if job["with"].get("patch-dir"):
            assert (VENDOR_REPO / job["with"]["patch-dir"]).is_dir(), name
    assert len({j["with"].get("artifact-name") for j in callers.values()}) == len(callers)


def test_composite_action_shell_is_shellcheck_clean():
    # actionlint lints run: in workflows only; shellcheck is optional (not a Python package)
    shellcheck = shutil.which("shellcheck")
    if not shellcheck:
        pytest.skip("shellcheck not on PATH")
    for step in load(ACTION)["runs"]["steps"]:
        if "run" in step:
            r = subprocess.run([shellcheck, "-s", "bash", "-"], input=step["run"],
                               capture_output=True, text=True, timeout=60)
            assert r.returncode == 0, f"{step['name']}:\n{r.stdout}"


def test_actionlint_checks_the_calls_of_the_local_reusable_workflow(actionlint, tmp_path):
    """The self-test's inputs are checked against validate-livepatch.yml's: an unknown one fails."""
    (tmp_path / ".git").mkdir()
    dest = tmp_path / ".github" / "workflows"
    dest.mkdir(parents=True)
    shutil.copy(REUSABLE, dest / REUSABLE.name)
    text = SELF_TEST.read_text()
    assert "      kernels: debian-6.1\n" in text
    (dest / SELF_TEST.name).write_text(text.replace("      kernels: debian-6.1\n",
                                                    "      kernels: debian-6.1\n      no-such-input: x\n", 1))
    r = lint(actionlint, (dest / SELF_TEST.name).relative_to(tmp_path), cwd=tmp_path)
    assert r.returncode != 0 and 'input "no-such-input" is not defined' in r.stdout, r.stdout + r.stderr


# The scripts, run as the runner runs them ---------------------------------------------------------

def step(steps: list, name: str) -> dict:
    (found,) = [s for s in steps if s.get("name") == name]
    return found


def run_step(script: str, shell: str, env: dict, tmp_path: Path, cwd: Optional[Path] = None) -> subprocess.CompletedProcess:
    """``script`` as the runner runs a step (bash: --noprofile --norc -eo pipefail; python: python),
    with GITHUB_OUTPUT, GITHUB_ENV and GITHUB_STEP_SUMMARY files under ``tmp_path``."""
    path = tmp_path / ("step.py" if shell == "python" else "step.sh")
    path.write_text(script)
    files = {k: tmp_path / k.lower() for k in ("GITHUB_OUTPUT", "GITHUB_ENV", "GITHUB_STEP_SUMMARY")}
    for f in files.values():
        f.write_text("")
    argv = [sys.executable, str(path)] if shell == "python" else ["bash", "--noprofile", "--norc", "-eo", "pipefail",
                                                                    str(path)]
    return subprocess.run(argv, env={**os.environ, **{k: str(v) for k, v in files.items()}, "RUNNER_TEMP": str(tmp_path),
                                     **env}, cwd=cwd or tmp_path, capture_output=True, text=True, timeout=60)


def outputs(tmp_path: Path, name: str = "github_output") -> dict:
    return dict(line.split("=", 1) for line in (tmp_path / name).read_text().splitlines() if "=" in line)


def kernel_matrix(kernels: str, tmp_path: Path) -> subprocess.CompletedProcess:
    s = step(load(REUSABLE)["jobs"]["kernels"]["steps"], "One job per kernel")
    assert s["shell"] == "python"
    return run_step(s["run"], "python", {"KERNELS": kernels, "LAB_KERNELS": str(ROOT / "kernels")}, tmp_path)


def test_the_kernel_list_becomes_one_matrix_entry_per_kernel(tmp_path):
    r = kernel_matrix("debian-6.1, debian-6.12 debian-6.1\ndebian-7@7.2.13-1", tmp_path)
    assert r.returncode == 0, r.stdout + r.stderr
    assert json.loads(outputs(tmp_path)["matrix"]) == {"include": [
        {"kernel": "debian-6.1", "slug": "debian-6.1"}, {"kernel": "debian-6.12", "slug": "debian-6.12"},
        {"kernel": "debian-7@7.2.13-1", "slug": "debian-7_7.2.13-1"}]}


def test_all_is_every_kernel_the_lab_defines(tmp_path):
    r = kernel_matrix("all", tmp_path)
    assert r.returncode == 0, r.stdout + r.stderr
    defined = sorted(load(p).get("name", p.stem) for p in (ROOT / "kernels").glob("*.yaml"))
    assert [e["kernel"] for e in json.loads(outputs(tmp_path)["matrix"])["include"]] == defined


@pytest.mark.parametrize("kernels", ["", " , ", "debian-6.1 $(reboot)", "debian-6.1@1:2 debian-6.1@1_2"])
def test_a_kernel_list_that_names_no_kernel_fails_the_first_job(tmp_path, kernels):
    r = kernel_matrix(kernels, tmp_path)
    assert r.returncode == 1 and "::error::kernels:" in r.stdout, r.stdout + r.stderr
    assert "matrix" not in outputs(tmp_path)


@pytest.mark.parametrize("found, verdict", [
    ({"debian-6.1": "pass", "debian-6.12": "pass"}, "pass"),
    ({"debian-6.1": "pass", "debian-6.12": "fail"}, "fail"),
    ({"debian-6.1": "error", "debian-6.12": "fail"}, "error"),
    ({"debian-6.1": "pass"}, "error"),     # debian-6.12's job gave no verdict
    ({"debian-6.1": "pass", "debian-6.12": "maybe"}, "error"),
])
def test_the_verdicts_of_the_kernels_jobs_are_gathered(tmp_path, found, verdict):
    legs = [{"kernel": k, "slug": k} for k in ("debian-6.1", "debian-6.12")]
    (tmp_path / "verdicts").mkdir()
    for kernel, v in found.items():   # as the kernels' jobs record and upload them
        (tmp_path / "verdicts" / f"{kernel}.json").write_text(json.dumps({"kernel": kernel, "verdict": v}))
    s = step(load(REUSABLE)["jobs"]["verdict"]["steps"], "Gather the verdicts")
    r = run_step(s["run"], s["shell"], {"MATRIX": json.dumps({"include": legs})}, tmp_path)
    assert r.returncode == 0, r.stdout + r.stderr
    out = outputs(tmp_path)
    assert out["verdict"] == verdict
    assert json.loads(out["verdicts"]) == {k: found.get(k, "error") for k in ("debian-6.1", "debian-6.12")}
    assert f"### livepatch-lab: {verdict}" in (tmp_path / "github_step_summary").read_text()


def test_no_matrix_at_all_is_an_error_verdict(tmp_path):
    s = step(load(REUSABLE)["jobs"]["verdict"]["steps"], "Gather the verdicts")
    r = run_step(s["run"], s["shell"], {"MATRIX": ""}, tmp_path)   # the first job failed
    assert r.returncode == 0 and outputs(tmp_path)["verdict"] == "error", r.stdout + r.stderr


def test_the_recorded_verdict_is_what_the_gathering_reads(tmp_path):
    s = step(load(REUSABLE)["jobs"]["validate"]["steps"], "Record the verdict")
    r = run_step(s["run"], "bash", {"KERNEL": "debian-7@7.2.13-1", "SLUG": "debian-7_7.2.13-1", "VERDICT": ""},
                 tmp_path)
    assert r.returncode == 0, r.stderr
    assert json.loads((tmp_path / "verdict" / "debian-7_7.2.13-1.json").read_text()) == {
        "kernel": "debian-7@7.2.13-1", "verdict": "error"}


ACTION_INPUTS = {"WORKDIR": ".", "PATCH_DIR": "", "SCENARIOS": "", "KERNELS": "debian-6.1", "CHECK_ONLY": ""}


def prepare(tmp_path: Path, **env: str) -> subprocess.CompletedProcess:
    s = step(load(ACTION)["runs"]["steps"], "Prepare")
    work = tmp_path / "work"
    return run_step(s["run"], s["shell"], {**ACTION_INPUTS, "LAB_DIR": str(ROOT), "HOME": str(tmp_path), **env},
                    tmp_path, cwd=work)


@pytest.fixture
def patch_repo(tmp_path):
    work = tmp_path / "work"
    (work / "repo" / "patch").mkdir(parents=True)
    (work / "repo" / "patch" / "Kbuild").write_text("obj-m := p.o\n")
    (work / "repo" / "lab").mkdir()
    (work / "repo" / "lab" / "a.yaml").write_text("patch: {source: ../patch}\n")
    return work


@pytest.mark.parametrize("env, words", [
    ({"PATCH_DIR": "patch", "SCENARIOS": "lab/a.yaml"}, "not both"),
    ({}, "give patch-dir"),
    ({"SCENARIOS": "lab/a.yaml", "CHECK_ONLY": "cat /proc/cmdline"}, "go with patch-dir"),
    ({"PATCH_DIR": "nowhere"}, "patch-dir 'nowhere' not found"),
    ({"SCENARIOS": "lab/a.yaml lab/b.yaml"}, "scenario 'lab/b.yaml' not found"),
    ({"PATCH_DIR": "patch", "KERNELS": " , "}, "no kernel named"),
    ({"PATCH_DIR": "patch", "WORKDIR": "elsewhere"}, "working-directory 'elsewhere' not found"),
])
def test_the_action_refuses_inputs_that_say_nothing_or_too_much(tmp_path, patch_repo, env, words):
    r = prepare(tmp_path, **{"WORKDIR": "repo", **env})
    assert r.returncode == 1 and "::error::" in r.stdout and words in r.stdout, r.stdout + r.stderr


def test_the_action_prepares_the_cache_key_parts(tmp_path, patch_repo):
    r = prepare(tmp_path, WORKDIR="repo", SCENARIOS="lab/a.yaml", KERNELS="debian-6.1, debian-7@7.2.13-1")
    assert r.returncode == 0, r.stdout + r.stderr
    out = outputs(tmp_path)
    assert out["kernels"] == "debian-6.1_debian-7@7.2.13-1"
    assert re.fullmatch(r"[0-9a-f]{12}", out["ref"]) and re.fullmatch(r"\d{4}-W\d{2}", out["week"])
    assert out["lab"] == str(ROOT) and out["venv"] == f"{tmp_path}/livepatch-lab-venv"
    assert outputs(tmp_path, "github_env")["LIVEPATCH_LAB_CACHE"] == f"{tmp_path}/.cache/livepatch-lab"


def lab_command(tmp_path: Path, **env: str) -> list[str]:
    """The command line the action's run step gives livepatch-lab (through a fake sudo)."""
    fake = tmp_path / "bin"
    fake.mkdir()
    (fake / "sudo").write_text('#!/bin/sh\n[ "$1" = -E ] && shift\nexec "$@"\n')
    (fake / "livepatch-lab").write_text('#!/bin/sh\nprintf "%s\\n" "$PWD" "$@" > "$ARGS"\nexit 1\n')
    for f in fake.iterdir():
        f.chmod(0o755)
    s = step(load(ACTION)["runs"]["steps"], "Run livepatch-lab")
    assert s["working-directory"] == "${{ inputs.working-directory }}"
    inputs = {"PATCH_DIR": "", "SCENARIOS": "", "KERNELS": "debian-6.1", "PROBE": "", "EXPECT_PATCHED": "",
              "DURATION": "", "UPGRADE_FROM": "", "MODULE_PARAMS": "", "APPLY_WITH": "", "TARGET_MODULES": ""}
    (tmp_path / "repo").mkdir()
    r = run_step(s["run"], s["shell"], {**inputs, **env, "LAB_BIN": str(fake / "livepatch-lab"), "OUT": "/out",
                                        "ARGS": str(tmp_path / "args"), "PATH": f"{fake}:{os.environ['PATH']}"},
                 tmp_path, cwd=tmp_path / "repo")
    # the lab's exit status (1 here) is judged from result.json, not by the step
    assert r.returncode == 0 and "livepatch-lab exited 1" in r.stdout, r.stdout + r.stderr
    cwd, *argv = (tmp_path / "args").read_text().splitlines()
    assert cwd == str(tmp_path / "repo")
    return argv


OUTPUTS = ["--json", "/out/result.json", "--artifacts", "/out/artifacts", "--report", "/out/report"]


def test_the_action_runs_check_with_every_option_passed_through(tmp_path):
    argv = lab_command(tmp_path, PATCH_DIR="patch", KERNELS="debian-6.1,debian-7", PROBE="cat /proc/cmdline",
                       EXPECT_PATCHED="^a b$", DURATION="5", UPGRADE_FROM="old.ko", APPLY_WITH="kpatch",
                       TARGET_MODULES="target other/t.ko:n=1,m=2", MODULE_PARAMS="a=1 b=2")
    assert argv == ["check", "patch", "--probe", "cat /proc/cmdline", "--expect-patched", "^a b$", "--duration", "5",
                    "--upgrade-from", "old.ko", "--apply-with", "kpatch", "--target-module", "target",
                    "--target-module", "other/t.ko:n=1,m=2", "--param", "a=1", "--param", "b=2",
                    "--kernel", "debian-6.1", "--kernel", "debian-7", *OUTPUTS]


def test_the_action_runs_scenario_files_with_run(tmp_path):
    argv = lab_command(tmp_path, SCENARIOS="lab/a.yaml  lab/b.yaml", KERNELS="debian-6.12")
    assert argv == ["run", "lab/a.yaml", "lab/b.yaml", "--kernel", "debian-6.12", *OUTPUTS]


def test_the_actions_verdict_is_the_worst_of_the_runs(tmp_path):
    s = step(load(ACTION)["runs"]["steps"], "Verdict")
    seen = {}
    for name, summary in {"pass": {"pass": 2, "fail": 0, "error": 0}, "fail": {"pass": 1, "fail": 1, "error": 0},
                          "error": {"pass": 1, "fail": 1, "error": 1}, "none": {"pass": 0, "fail": 0, "error": 0}}.items():
        out = tmp_path / name
        out.mkdir()
        (out / "result.json").write_text(json.dumps({"summary": summary}))
        r = run_step(s["run"], s["shell"], {"OUT": str(out)}, out)
        assert r.returncode == 0, r.stderr
        seen[name] = outputs(out)["verdict"]
    missing = tmp_path / "missing"
    missing.mkdir()
    run_step(s["run"], s["shell"], {"OUT": str(missing)}, missing)
    assert seen == {"pass": "pass", "fail": "fail", "error": "error", "none": "error"}
    assert outputs(missing)["verdict"] == "error"


def test_github_actions_are_pinned_to_a_major_version():
    files = [*WORKFLOWS, *EXAMPLES, ACTION]
    for path in files:
        for ref in re.findall(r"uses:\s*(actions/[\w-]+@\S+)", path.read_text()):
            assert re.fullmatch(r"actions/[\w-]+@v\d+", ref), f"{path.name}: {ref}"
