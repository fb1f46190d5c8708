"""Scenarios: a YAML file, or the ``check`` command's options → a validated, frozen ``Scenario``.

Both go through one schema (``core.yamlconf``): every error names the file,
the line and the field (``file:line [field]: message``), or the option for
``check`` (``livepatch-lab check [--duration]: ...``). Everything that can be
known wrong is refused here, before anything is fetched, built or booted:
types, ranges, regular expressions, missing files, and windows too short for
the lab to judge. Paths are relative to the YAML file. The format is
documented in README.md.
"""
from __future__ import annotations

import math
import re
from pathlib import Path
from typing import Any, Mapping, Optional, Sequence, cast

from ...core import paths, yamlconf
from ...core.errors import ConfigError
from ...core.yamlconf import Field
from ...supply import modinfo, recipes
from . import hookcmd
from .specs import (ACTIONS, APPLY_TOOLS, CHECKS, DEBUG_FACILITIES, ON_STALL, OUTCOMES, SAMPLE_PREFIX,
                    TOOL_IMAGES, VERDICTS, ApplySpec, DebugSpec, Expectation, OverheadSpec, ModuleSpec,
                    ProbeSpec, Scenario, SecuritySpec, ServiceSpec, SoakSpec, StepSpec, StressSpec,
                    Thresholds, TimelineSpec, TransitionSpec)

CHECK_SOURCE = "livepatch-lab check"
# What the lab needs to judge a window: the service's baseline must hold this many requests
# (and last at least MIN_BASELINE s); a judged window starts 1 s after its transition
# (TRANSITION_TAIL), and a probe phase must fit two runs.
MIN_REQUESTS = 10
MIN_BASELINE = 1.0
TRANSITION_TAIL = 1.0


def _one_of(choices: tuple[str, ...]):
    return lambda v: None if v in choices else f"must be one of {', '.join(choices)}, not {v!r}"


def _regex(v: str) -> Optional[str]:
    try:
        re.compile(v)
    except re.error as exc:
        return f"not a valid regular expression: {exc}"
    return None


def _positive(v: float) -> Optional[str]:
    return None if 0 < v < math.inf else f"must be positive and finite, not {v!r}"


def _seconds(v: float) -> Optional[str]:
    return None if 0 <= v < math.inf else f"must not be negative (and finite), not {v!r}"


def _command(v: str) -> Optional[str]:
    return None if v.strip() else "must not be empty"


def _port(p: int) -> Optional[str]:
    return None if 0 < p < 65536 else f"not a TCP port: {p}"


def _url_path(v: str) -> Optional[str]:
    ok = v.startswith("/") and not any(c in v for c in " \r\n")
    return None if ok else f"must be an absolute URL path without spaces, not {v!r}"


def _checks(cs: list) -> Optional[str]:
    return next((f"unknown check {c!r} (known: {', '.join(CHECKS)})" for c in cs if c not in CHECKS), None)


def debug_facilities(value: Any) -> tuple[str, ...]:
    """``debug:`` (a list of facilities, or ``none`` / ``all``) or ``--debug`` (``LIST|none|all``, a
    comma-separated string) -> the facilities; ``ValueError`` names what is wrong."""
    if isinstance(value, str):
        word = value.strip()
        if word in ("none", ""):
            return ()
        if word == "all":
            return DEBUG_FACILITIES
        value = [v.strip() for v in word.split(",")]
    unknown = [v for v in value if v not in DEBUG_FACILITIES]
    if unknown or not value and not isinstance(value, list):
        raise ValueError(f"unknown debug facility {unknown[0]!r} (known: {', '.join(DEBUG_FACILITIES)}; "
                         "or none, or all)")
    return tuple(f for f in DEBUG_FACILITIES if f in value)


def _debug(v: Any) -> Optional[str]:
    if not isinstance(v, (str, list)) or isinstance(v, list) and not all(isinstance(x, str) for x in v):
        return f"must be a list of {', '.join(DEBUG_FACILITIES)}, or none, not {v!r}"
    try:
        debug_facilities(v)
    except ValueError as exc:
        return str(exc)
    return None


_PARAM = re.compile(r"[A-Za-z_][A-Za-z0-9_]*")
_KEY = re.compile(r"[A-Za-z0-9][\w.+-]*")


def _params(v: dict) -> Optional[str]:
    for name, value in v.items():
        if not isinstance(name, str) or not _PARAM.fullmatch(name):
            return f"not a module parameter name: {name!r}"
        if not isinstance(value, (str, int, float)) or (isinstance(value, float) and not math.isfinite(value)):
            return f"{name}: must be a string, a number or true/false, not {value!r}"
    return None


def _key(v: str) -> Optional[str]:
    return None if _KEY.fullmatch(v) else f"must be a plain name (letters, digits, . _ + -), not {v!r}"


NUM = (int, float)
_MODULE = {"source": Field(str, doc="kbuild directory, built against each kernel's headers"),
           "ko": Field(str, doc="prebuilt module; checked against the kernel before loading"),
           "params": Field(dict, default={}, check=_params, doc="module parameters: name -> value")}
_STEP = {**{a: Field(NUM if a == "hold" else str, check=_seconds if a == "hold" else _key) for a in ACTIONS},
         "probe": Field(str, check=_regex, doc="what the probe shows in the hold after this step"),
         "expect": Field(str, default="ok", check=_one_of(OUTCOMES))}
SCHEMA: yamlconf.Schema = {
    "name": Field(str, check=_key),
    "description": Field(str, default=""),
    "kernels": Field(list, items=str),
    "tags": Field(list, items=str, default=[], check=lambda ts: next(
        (f"a tag is a pytest marker name (letters, digits, _), not {t!r}" for t in ts
         if not re.fullmatch(r"[A-Za-z_]\w*", t)), None), doc="pytest markers for the scenario's items"),
    "patch": Field(dict, schema={
        **_MODULE,
        "build_for": Field(str, doc="build against this kernel instead (compat testing)")}),
    "upgrade_from": Field(dict, schema=_MODULE, doc="the patch in the field, loaded before the baseline"),
    "patches": Field(dict, values=_MODULE, check=lambda v: next((_key(k) for k in v if _key(k)), None),
                     doc="named patches for `steps`: name -> module"),
    "steps": Field(list, items=_STEP),
    "target_modules": Field(list, items={**_MODULE, "name": Field(str, check=_key)}, default=[]),
    "probe": Field(dict, schema={
        "command": Field(str, check=_command),
        "interval": Field(NUM, default=ProbeSpec.interval, check=_positive),
        "expect": Field(dict, schema={p: Field(str, check=_regex) for p in ("before", "patched", "after")})}),
    "service": Field(dict, schema={
        "enabled": Field(bool, default=True),
        "port": Field(int, default=ServiceSpec.port, check=_port),
        "path": Field(str, default=ServiceSpec.path, check=_url_path),
        "rate": Field(NUM, default=ServiceSpec.rate, check=_positive),
        "timeout": Field(NUM, default=ServiceSpec.timeout, check=_positive),
        "command": Field(str, check=_command), "serve_file": Field(str, check=_command)}),
    "security": Field(dict, schema={
        "sig_enforce": Field(bool, default=False, doc="boot with module.sig_enforce=1"),
        "sign_key": Field(str, check=_command, doc="private key to sign the run's modules with"),
        "sign_cert": Field(str, check=_command, doc="its X.509 certificate")}),
    "soak": Field(dict, schema={
        "cycles": Field(int, default=0, check=lambda n: None if 2 <= n <= 1000 else
                        f"must be 2 to 1000 cycles, not {n}"),
        "hold": Field(NUM, default=SoakSpec.hold, check=_seconds),
        "leak_kib": Field(NUM, default=SoakSpec.leak_kib, check=_positive),
        "mem_kib": Field(NUM, default=SoakSpec.mem_kib, check=_positive),
        "slowdown": Field(NUM, default=SoakSpec.slowdown, check=lambda v: None if 1 < v < math.inf else
                          f"must be more than 1 (a factor), not {v!r}")}),
    "apply": Field(dict, schema={
        "tool": Field(str, check=_one_of(APPLY_TOOLS), doc="insmod (the lab's own) or kpatch"),
        "command": Field(str, check=hookcmd.check, doc="a hook that loads the patch: {module}, {name}"),
        "revert": Field(str, check=hookcmd.check, doc="a hook that disables and unloads it")}),
    "image": Field(str, check=_command, doc="the guest image's recipe: a name in images/, or a .yaml file"),
    "debug": Field((list, str), default=list(DEBUG_FACILITIES), check=_debug,
                   doc="the kernel's memory debugging: slub, kfence, poison (default all), or none"),
    "dmesg": Field(dict, schema={"expect": Field(list, items=str, default=[],
                                                 doc="lines the kernel must log during the run, in order")}),
    "stress": Field(dict, schema={"enabled": Field(bool, default=True),
                                  "args": Field(str, default=StressSpec.args, check=_command)}),
    "timeline": Field(dict, schema={"baseline": Field(NUM, default=TimelineSpec.baseline, check=_seconds),
                                    "patched": Field(NUM, default=TimelineSpec.patched, check=_seconds),
                                    "cooldown": Field(NUM, default=TimelineSpec.cooldown, check=_seconds)}),
    "transition": Field(dict, schema={"timeout": Field(NUM, check=_positive),
                                      "on_stall": Field(str, default="fail", check=_one_of(ON_STALL))}),
    "thresholds": Field(dict, schema={
        **{name: Field(NUM, default=getattr(Thresholds, name), check=_positive)
           for name in ("max_latency", "latency_factor", "max_gap", "median_factor", "min_median",
                        "slab_growth_kib", "vmalloc_growth_kib")},
        "overhead": Field(dict, schema={"max_percent": Field(NUM, check=_positive, doc=(
            "fail `overhead` when the 95 % interval of the patched/unpatched ratio lies above +P %"))})}),
    "overhead": Field(dict, schema={
        "command": Field(str, check=_command, doc="what exercises the patched code (default: the probe's)"),
        "repeat": Field(int, default=OverheadSpec.repeat, check=lambda n: None if 1 <= n <= 100000 else
                        f"must be 1 to 100000 calls a block, not {n}"),
        "blocks": Field(int, default=OverheadSpec.blocks, check=lambda n: None if 5 <= n <= 1000 else
                        f"must be 5 to 1000 blocks an arm, not {n}"),
        "cycles": Field(int, default=OverheadSpec.cycles, check=lambda n: None if 1 <= n <= 100 else
                        f"must be 1 to 100 load/revert cycles, not {n}")}),
    "expect": Field(dict, schema={
        "verdict": Field(str, default="pass", check=_one_of(VERDICTS)),
        "checks": Field(list, items=str, default=[], check=_checks),
        "per_kernel": Field(list, default=[], items={
            "kernel": Field(str, required=True),
            "verdict": Field(str, required=True, check=_one_of(VERDICTS)),
            "checks": Field(list, items=str, default=[], check=_checks),
            "reason": Field(str, required=True)})}),
}


def _module(raw: dict, loaded: yamlconf.Loaded, name: str, base: Path, key: Optional[str] = None,
            late: bool = False) -> ModuleSpec:
    src, ko = raw.get("source"), raw.get("ko")
    if bool(src) == bool(ko):
        raise loaded.error("give exactly one of source (a kbuild directory) or ko (a built module)", name)
    params = tuple((k, str(int(v)) if isinstance(v, bool) else str(v)) for k, v in (raw.get("params") or {}).items())
    if src and src.startswith(SAMPLE_PREFIX):    # built from the kernel's own source at run time
        sample = src[len(SAMPLE_PREFIX):]
        if _key(sample):
            raise loaded.error(f"not a sample name: {sample!r}", f"{name}.source")
        return ModuleSpec(sample=sample, params=params, key=key or raw.get("name"), late=late)
    path = (base / cast(str, src or ko)).resolve()   # one of them is given: checked above
    if src and not path.is_dir():
        raise loaded.error(f"source directory {path} does not exist", f"{name}.source")
    if src and not any((path / f).is_file() for f in ("Kbuild", "Makefile")):
        raise loaded.error(f"{path} is not a kbuild directory (no Kbuild or Makefile)", f"{name}.source")
    if ko and not path.is_file():
        raise loaded.error(f"module {path} does not exist", f"{name}.ko")
    if ko and _magic(path) != b"\x7fELF":
        raise loaded.error(f"{path} is not a kernel module (not an ELF file)", f"{name}.ko")
    if ko:   # a prebuilt module is checked now, not after kernels were fetched for it
        try:
            info = modinfo.inspect(path)
            if not name.startswith("target_modules"):
                modinfo.require_livepatch(info)
        except ConfigError as exc:
            raise loaded.error(exc.message, f"{name}.ko") from None
    return ModuleSpec(source=path if src else None, ko=path if ko else None, build_for=raw.get("build_for"),
                      params=params, key=key or raw.get("name"), late=late)


def _magic(path: Path) -> bytes:
    with open(path, "rb") as fh:
        return fh.read(4)


def _judgeable(sc: Scenario, loaded: yamlconf.Loaded) -> None:
    """Refuse windows too short for the lab to judge: a verdict from them would be the lab's
    guess, not the patch's doing."""
    tl, svc, probe = sc.timeline, sc.service, sc.probe
    if svc.enabled:
        need = max(MIN_BASELINE, MIN_REQUESTS / svc.rate)
        if tl.baseline < need:
            raise loaded.error(f"{tl.baseline:g} s is too short to judge the service: the baseline needs at "
                               f"least {need:g} s ({MIN_REQUESTS} requests at {svc.rate:g}/s)",
                               "timeline.baseline")
        need = TRANSITION_TAIL + MIN_REQUESTS / svc.rate
        if tl.patched < need and not sc.steps:
            raise loaded.error(f"{tl.patched:g} s is too short to judge the service while patched: at least "
                               f"{need:g} s ({TRANSITION_TAIL:g} s after the transition, then {MIN_REQUESTS} "
                               f"requests at {svc.rate:g}/s)", "timeline.patched")
    runs = 2 * probe.interval   # two runs, so one lies wholly inside the window
    for i, step in enumerate(sc.steps):
        probed = step.probe or (i and sc.steps[i - 1].probe)
        if step.action == "hold" and probed and step.seconds < TRANSITION_TAIL + runs:
            raise loaded.error(f"{step.seconds:g} s is too short to check the probe: at least "
                               f"{TRANSITION_TAIL + runs:g} s (two probe runs every {probe.interval:g} s, after "
                               f"{TRANSITION_TAIL:g} s for the transition)", f"steps[{i}].hold")
    if sc.soak.cycles and "patched" in probe.patterns and sc.soak.hold < TRANSITION_TAIL + runs:
        raise loaded.error(f"{sc.soak.hold:g} s is too short to check the probe while patched: at least "
                           f"{TRANSITION_TAIL + runs:g} s", "soak.hold")
    for phase, window, lead in (("before", "baseline", 0.0), ("patched", "patched", TRANSITION_TAIL),
                                ("after", "cooldown", TRANSITION_TAIL)):
        have = getattr(tl, window)
        if phase in probe.patterns and have < lead + runs:
            raise loaded.error(f"{have:g} s is too short to check the probe's {phase!r} output: at least "
                               f"{lead + runs:g} s (two probe runs every {probe.interval:g} s"
                               f"{f', after {lead:g} s for the transition' if lead else ''})",
                               f"timeline.{window}")


def _security(raw: dict, loaded: yamlconf.Loaded, base: Path) -> SecuritySpec:
    key, cert = raw["sign_key"], raw["sign_cert"]
    if bool(key) != bool(cert):
        raise loaded.error("give both sign_key and sign_cert, or neither", "security.sign_key" if cert else
                           "security.sign_cert")
    paths = []
    for name, value in (("sign_key", key), ("sign_cert", cert)):
        if value:
            path = (base / value).resolve()
            if not path.is_file():
                raise loaded.error(f"{path} does not exist or is not a file", f"security.{name}")
            paths.append(path)
    return SecuritySpec(raw["sig_enforce"], *(paths or (None, None)))


def _apply(raw: dict, loaded: yamlconf.Loaded) -> ApplySpec:
    if raw["tool"] and raw["command"]:
        raise loaded.error("give a tool or a command hook, not both", "apply.command")
    if raw["revert"] and not raw["command"]:
        raise loaded.error("a revert hook goes with a `command` hook (a tool reverts its own way)", "apply.revert")
    if raw["command"]:
        return ApplySpec("command", raw["command"], raw["revert"])
    return ApplySpec(raw["tool"] or ApplySpec.tool)


def _overhead(v: dict, loaded: yamlconf.Loaded) -> OverheadSpec:
    raw = v["overhead"]
    given = "overhead" in loaded.lines or raw["command"] is not None   # a mapping left out reads as its defaults
    if not given and v["thresholds"]["overhead"]["max_percent"] is None:
        return OverheadSpec()
    if not (raw["command"] or v["probe"]["command"]):
        raise loaded.error("the cost workload needs a command (overhead.command), or a probe command to "
                           "time", "overhead" if "overhead" in loaded.lines else "overhead.command")
    return OverheadSpec(True, raw["command"], int(raw["repeat"]), int(raw["blocks"]), int(raw["cycles"]))


def _image(name: Optional[str], tool: str, loaded: yamlconf.Loaded, base: Path) -> Optional[Path]:
    """The recipe file: ``image`` (a name in images/, or a path relative to the scenario), else the
    one the tool needs; checked now, before anything is built."""
    name = name or TOOL_IMAGES.get(tool)
    if not name:
        return None
    path = (paths.IMAGES_DIR / f"{name}.yaml" if "/" not in name and not name.endswith(".yaml")
            else base / name).resolve()
    if not path.is_file():
        raise loaded.error(f"no image recipe {path}", "image")
    recipes.load_recipe(path)   # its own errors name its file and line
    return path


def _steps(v: dict, loaded: yamlconf.Loaded, base: Path,
           targets: list[dict]) -> tuple[dict[str, ModuleSpec], tuple[StepSpec, ...], set[str]]:
    """The lifecycle form: named patches and the steps over them, checked for what can be known
    before anything runs (names, one action a step, where a probe expectation is judged)."""
    if not v["steps"]:
        raise loaded.error("named patches need `steps` saying what to do with them", "patches")
    if not v["patches"]:
        raise loaded.error("steps need `patches`: name -> kbuild directory or .ko", "steps")
    patches = {k: _module(m, loaded, f"patches.{k}", base, key=k) for k, m in v["patches"].items()}
    names = cast("set[str]", {t.get("name") for t in targets if t.get("name")})   # only those with a name
    steps, late = [], set()
    for i, raw in enumerate(v["steps"]):
        where = f"steps[{i}]"
        actions = [a for a in ACTIONS if raw[a] is not None]
        if len(actions) != 1:
            raise loaded.error(f"a step is exactly one of {', '.join(ACTIONS)}", where)
        action = actions[0]
        subject = None if action == "hold" else raw[action]
        known = names if action.endswith("_target") else patches
        if subject is not None and subject not in known:
            what = "target module (a `name` in target_modules)" if action.endswith("_target") else "patch"
            raise loaded.error(f"no {what} called {subject!r} (known: {', '.join(sorted(known)) or 'none'})",
                               f"{where}.{action}")
        if raw["expect"] != "ok" and action != "load":
            raise loaded.error("only a load can be expected to be refused", f"{where}.expect")
        if action == "load_target":
            late.add(cast(str, subject))   # not a hold: the step's value, not None
        steps.append(StepSpec(action, subject, float(raw["hold"] or 0), raw["probe"], raw["expect"]))
    for i, step in enumerate(steps):
        if step.probe and step.action != "hold" and (i + 1 == len(steps) or steps[i + 1].action != "hold"):
            raise loaded.error("a probe expectation is judged in a hold: follow this step with `- hold: S`",
                               f"steps[{i}].probe")
    return patches, tuple(steps), late


def _scenario(loaded: yamlconf.Loaded, name: str, path: Optional[Path], base: Path) -> Scenario:
    v = loaded.values
    probe, service, timeline, expect = v["probe"], v["service"], v["timeline"], v["expect"]
    patterns = {k: r for k, r in (probe["expect"] or {}).items() if r}
    if patterns and not probe["command"]:
        raise loaded.error("probe expectations need a probe command", "probe.expect")
    def given(section: str) -> bool:   # a mapping left out comes back as its defaults
        return bool(v[section]["source"] or v[section]["ko"])
    single = given("patch")
    patches: dict[str, ModuleSpec] = {}
    steps: tuple[StepSpec, ...] = ()
    late: set[str] = set()
    if v["patches"] is not None or v["steps"] is not None:
        if single:
            raise loaded.error("give one patch under test (`patch`), or a lifecycle (`patches` and `steps`), "
                               "not both", "patch")
        if given("upgrade_from"):
            raise loaded.error("upgrade_from goes with a single `patch`; in a lifecycle, load the old patch "
                               "as a step", "upgrade_from")
        patches, steps, late = _steps(v, loaded, base, v["target_modules"])
        if any(s.probe for s in steps) and not probe["command"]:
            raise loaded.error("probe expectations need a probe command", "probe.command")
        loads = [s.subject for s in steps if s.action == "load"]
        if not loads:
            raise loaded.error("a lifecycle loads at least one patch", "steps")
        patch = patches[cast(str, loads[-1])]    # the candidate: the last patch the steps load (a load names it)
    elif not single:
        raise loaded.error("required field is missing (or give `patches` and `steps`)", "patch")
    else:
        patch = _module(v["patch"], loaded, "patch", base)
    applied = _apply(v["apply"], loaded)
    sc = Scenario(
        name=v["name"] or name, path=path, description=v["description"], patch=patch,
        kernels=tuple(v["kernels"]) if v["kernels"] is not None else None,
        targets=tuple(_module(t, loaded, f"target_modules[{i}]", base, late=t.get("name") in late)
                      for i, t in enumerate(v["target_modules"])),
        probe=ProbeSpec(probe["command"], float(probe["interval"]), tuple(patterns.items())),
        service=ServiceSpec(**{k: service[k] for k in ("enabled", "port", "path", "command", "serve_file")},
                            rate=float(service["rate"]), timeout=float(service["timeout"])),
        stress=StressSpec(**v["stress"]),
        timeline=TimelineSpec(**{k: float(x) for k, x in timeline.items()}),
        transition=TransitionSpec(**v["transition"]),
        thresholds=Thresholds(**{k: float(x) for k, x in v["thresholds"].items() if k != "overhead"},
                              overhead_max_percent=(float(v["thresholds"]["overhead"]["max_percent"])
                                                    if v["thresholds"]["overhead"]["max_percent"] is not None
                                                    else None)),
        expect=Expectation(expect["verdict"], tuple(expect["checks"])),
        per_kernel={pk["kernel"]: Expectation(pk["verdict"], tuple(pk["checks"]), pk["reason"])
                    for pk in expect["per_kernel"]},
        upgrade_from=_module(v["upgrade_from"], loaded, "upgrade_from", base) if given("upgrade_from") else None,
        patches=patches, steps=steps, dmesg_expect=tuple(v["dmesg"]["expect"]), tags=tuple(v["tags"]),
        soak=SoakSpec(int(v["soak"]["cycles"]), float(v["soak"]["hold"]), float(v["soak"]["leak_kib"]),
                      float(v["soak"]["slowdown"]), float(v["soak"]["mem_kib"])),
        security=_security(v["security"], loaded, base), apply=applied,
        image=_image(v["image"], applied.tool, loaded, base),
        debug=DebugSpec(debug_facilities(v["debug"])),
        overhead=_overhead(v, loaded))
    if sc.apply.tool != "insmod" and any(m.params for m in (sc.patch, sc.upgrade_from, *sc.patches.values()) if m):
        raise loaded.error("module parameters need the lab's insmod: a tool or hook loads the module its own way",
                           "apply")
    if sc.overhead.enabled and (sc.soak.cycles or sc.steps or sc.upgrade_from):
        raise loaded.error("the cost workload cycles one patch (load, time, revert, time): not with a soak, "
                           "steps or upgrade_from", "overhead")
    if sc.soak.cycles and (sc.steps or sc.upgrade_from):
        raise loaded.error("a soak cycles one patch: not with steps or upgrade_from", "soak.cycles")
    _judgeable(sc, loaded)
    return sc


def load(path: Path) -> Scenario:
    path = Path(path)
    loaded = yamlconf.load(path, SCHEMA)
    return _scenario(loaded, path.stem, path, path.resolve().parent)


# check's options, by the scenario field each one sets
OPTIONS = {"patch": "PATCH", "patch.source": "PATCH", "patch.ko": "PATCH", "patch.params": "--param",
           "upgrade_from": "--upgrade-from", "upgrade_from.source": "--upgrade-from",
           "upgrade_from.ko": "--upgrade-from", "target_modules": "--target-module", "probe.command": "--probe",
           "probe.expect": "--expect-patched", "probe.expect.patched": "--expect-patched",
           "timeline.patched": "--duration", "service.serve_file": "--serve-file", "soak.cycles": "--cycles",
           "soak.hold": "--hold", "soak.leak_kib": "--leak-kib", "security.sig_enforce": "--sig-enforce",
           "security.sign_key": "--sign-key", "security.sign_cert": "--sign-cert", "apply": "--apply-with",
           "apply.tool": "--apply-with", "image": "--apply-with", "debug": "--debug",
           "overhead": "--overhead", "overhead.command": "--overhead", "thresholds.overhead": "--max-overhead",
           "thresholds.overhead.max_percent": "--max-overhead"}


def parse_params(items: Sequence[str], option: str, source: str = CHECK_SOURCE) -> dict[str, str]:
    """``NAME=VALUE`` strings (as given on the command line) -> {name: value}."""
    out: dict[str, str] = {}
    for item in items:
        name, eq, value = item.partition("=")
        if not eq or not _PARAM.fullmatch(name):
            raise ConfigError(f"not NAME=VALUE (a module parameter): {item!r}", source=source, field=option)
        out[name] = value
    return out


def from_options(patch: Path, *, targets: Sequence[str] = (), probe: Optional[str] = None,
                 expect_patched: Optional[str] = None, duration: Optional[float] = None,
                 serve_file: Optional[str] = None, upgrade_from: Optional[Path] = None,
                 params: Sequence[str] = (), soak: Optional[dict[str, Any]] = None,
                 security: Optional[dict[str, Any]] = None, apply_with: Optional[str] = None,
                 debug: Optional[str] = None, overhead: Optional[str] = None,
                 max_overhead: Optional[float] = None) -> Scenario:
    """The scenario behind ``livepatch-lab check PATCH ...`` (a kbuild directory or a .ko),
    validated by the scenario schema; errors name the option. A target is ``DIR`` or
    ``DIR:NAME=VALUE[,NAME=VALUE...]`` (its module parameters). With ``soak`` it is ``livepatch-lab
    soak``'s scenario; ``apply_with`` names the tool that applies the patch (``kpatch``)."""
    source = "livepatch-lab soak" if soak else CHECK_SOURCE
    def module(p: Path, option: str, extra: Optional[dict] = None) -> dict[str, Any]:
        if str(p).startswith(SAMPLE_PREFIX):
            return {"source": str(p), **({"params": extra} if extra else {})}
        p = Path(p).resolve()
        found: dict[str, Any] = ({"source": str(p)} if p.is_dir() else
                                 {"ko": str(p)} if p.is_file() and p.suffix == ".ko" else {})
        if not found:
            raise ConfigError(f"{p} is neither a kbuild directory nor a .ko file", source=source, field=option)
        return {**found, "params": extra} if extra else found

    def target(spec: str) -> dict[str, Any]:
        sample = str(spec).startswith(SAMPLE_PREFIX)
        path, colon, rest = str(spec)[len(SAMPLE_PREFIX) if sample else 0:].partition(":")
        path = SAMPLE_PREFIX + path if sample else path
        return module(Path(path), "--target-module",
                      parse_params(rest.split(","), "--target-module", source) if colon else None)
    raw: dict[str, Any] = {"patch": module(Path(patch), "PATCH", parse_params(params, "--param", source)),
                           "target_modules": [target(t) for t in targets]}
    if upgrade_from is not None:
        raw["upgrade_from"] = module(Path(upgrade_from), "--upgrade-from")
    if probe is not None:
        raw["probe"] = {"command": probe}
    if expect_patched is not None:
        raw.setdefault("probe", {})["expect"] = {"patched": expect_patched}
    if duration is not None:
        raw["timeline"] = {"patched": duration}
    if serve_file is not None:
        raw["service"] = {"serve_file": serve_file}
    if soak:
        raw["soak"] = {k: v for k, v in soak.items() if v is not None}
    if security:
        raw["security"] = {k: v for k, v in security.items() if v not in (None, False)}
    if apply_with is not None:
        raw["apply"] = {"tool": apply_with}
    if debug is not None:
        raw["debug"] = debug
    if overhead is not None:
        raw["overhead"] = {"command": overhead}
    if max_overhead is not None:
        raw["thresholds"] = {"overhead": {"max_percent": max_overhead}}
    names: Mapping[str, str] = {**OPTIONS, **{f"target_modules[{i}]{part}": "--target-module"
                                              for i in range(len(targets)) for part in ("", ".source", ".ko", ".params")}}
    loaded = yamlconf.load_data(raw, SCHEMA, source=source, names=names)
    return _scenario(loaded, Path(patch).stem, None, Path.cwd())
