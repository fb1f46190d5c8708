"""Scenarios: a YAML file, or the ``check`` command's options → a validated, frozen ``Scenario``.

Both go through one schema (``schema``, by ``core.yamlconf``): every error names the file,
the line and the field (``file:line [field]: message``), or the option for
``check`` (``livepatch-lab check [--duration]: ...``). Everything that can be
known wrong is refused here, before anything is fetched, built or booted:
types, ranges, regular expressions, missing files, and windows too short for
the lab to judge. Paths are relative to the YAML file. The format is
documented in docs/scenarios.md.

This module holds the two ways in and the checks across sections; each field's
check is in ``schema``, each section's spec is built in ``sections``, and the
windows are checked in ``judgeable``.
"""
from __future__ import annotations

from pathlib import Path
from typing import Any, Mapping, Optional, Sequence, cast

from ...core import yamlconf
from ...core.errors import ConfigError
from ...supply.srcbuild import diff as srcdiff
from .judgeable import judgeable
from .schema import PARAM_NAME, SCHEMA, debug_facilities
from .sections import apply_spec, image_recipe, lifecycle, module_spec, overhead_spec, security_spec
from .specs import (SAMPLE_PREFIX, DebugSpec, Expectation, ModuleSpec, ProbeSpec, ReleaseSpec, Scenario,
                    ServiceSpec, SoakSpec, StepSpec, StressSpec, Thresholds, TimelineSpec, TransitionSpec)

CHECK_SOURCE = "livepatch-lab check"


def _scenario(loaded: yamlconf.Loaded, name: str, path: Optional[Path], base: Path) -> Scenario:
    v = loaded.values
    probe, service, timeline, expect = v["probe"], v["service"], v["timeline"], v["expect"]
    patterns = {k: r for k, r in (probe["expect"] or {}).items() if r}
    if patterns and not probe["command"]:
        raise loaded.error("probe expectations need a probe command", "probe.expect")
    def given(section: str) -> bool:   # a mapping left out comes back as its defaults
        return bool(v[section]["source"] or v[section]["ko"] or v[section]["diff"])
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
        patches, steps, late = lifecycle(v, loaded, base, v["target_modules"])
        if any(s.probe for s in steps) and not probe["command"]:
            raise loaded.error("probe expectations need a probe command", "probe.command")
        loads = [s.subject for s in steps if s.action == "load"]
        if not loads:
            raise loaded.error("a lifecycle loads at least one patch", "steps")
        patch = patches[cast(str, loads[-1])]    # the candidate: the last patch the steps load (a load names it)
    elif not single:
        raise loaded.error("required field is missing (or give `patches` and `steps`)", "patch")
    else:
        patch = module_spec(v["patch"], loaded, "patch", base)
    applied = apply_spec(v["apply"], loaded)
    sc = Scenario(
        name=v["name"] or name, path=path, description=v["description"], patch=patch,
        kernels=tuple(v["kernels"]) if v["kernels"] is not None else None,
        targets=tuple(module_spec(t, loaded, f"target_modules[{i}]", base, late=t.get("name") in late)
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
        upgrade_from=module_spec(v["upgrade_from"], loaded, "upgrade_from", base) if given("upgrade_from") else None,
        patches=patches, steps=steps, dmesg_expect=tuple(v["dmesg"]["expect"]), tags=tuple(v["tags"]),
        soak=SoakSpec(int(v["soak"]["cycles"]), float(v["soak"]["hold"]), float(v["soak"]["leak_kib"]),
                      float(v["soak"]["slowdown"]), float(v["soak"]["mem_kib"])),
        security=security_spec(v["security"], loaded, base), apply=applied,
        image=image_recipe(v["image"], applied.tool, loaded, base),
        debug=DebugSpec(debug_facilities(v["debug"])),
        overhead=overhead_spec(v, loaded), release=ReleaseSpec(**v["release"]))
    if sc.apply.tool != "insmod" and any(m.params for m in (sc.patch, sc.upgrade_from, *sc.patches.values()) if m):
        raise loaded.error("module parameters need the lab's insmod: a tool or hook loads the module its own way",
                           "apply")
    if sc.overhead.enabled and (sc.soak.cycles or sc.steps or sc.upgrade_from):
        raise loaded.error("the cost workload cycles one patch (load, time, revert, time): not with a soak, "
                           "steps or upgrade_from", "overhead")
    if sc.soak.cycles and (sc.steps or sc.upgrade_from):
        raise loaded.error("a soak cycles one patch: not with steps or upgrade_from", "soak.cycles")
    judgeable(sc, loaded)
    return sc


def load(path: Path) -> Scenario:
    path = Path(path)
    loaded = yamlconf.load(path, SCHEMA)
    return _scenario(loaded, path.stem, path, path.resolve().parent)


# check's options, by the scenario field each one sets
OPTIONS = {"patch": "PATCH", "patch.source": "PATCH", "patch.ko": "PATCH", "patch.diff": "PATCH",
           "patch.build_targets": "--build-target", "patch.params": "--param",
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
        if not eq or not PARAM_NAME.fullmatch(name):
            raise ConfigError(f"not NAME=VALUE (a module parameter): {item!r}", source=source, field=option)
        out[name] = value
    return out


def from_options(patch: Path, *, targets: Sequence[str] = (), probe: Optional[str] = None,
                 expect_patched: Optional[str] = None, duration: Optional[float] = None,
                 serve_file: Optional[str] = None, upgrade_from: Optional[Path] = None,
                 params: Sequence[str] = (), soak: Optional[dict[str, Any]] = None,
                 security: Optional[dict[str, Any]] = None, apply_with: Optional[str] = None,
                 debug: Optional[str] = None, overhead: Optional[str] = None,
                 max_overhead: Optional[float] = None, build_targets: Sequence[str] = ()) -> Scenario:
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
                                 {"ko": str(p)} if p.is_file() and p.suffix == ".ko" else
                                 {"diff": str(p)} if option == "PATCH" and p.is_file() and srcdiff.looks_like_diff(p)
                                 else {})
        if not found:
            raise ConfigError(f"{p} is neither a kbuild directory, a .ko file" +
                              (" nor a source diff (.patch, .diff)" if option == "PATCH" else "") +
                              (" (it does not exist)" if not p.exists() else ""), source=source, field=option)
        return {**found, "params": extra} if extra else found

    def target(spec: str) -> dict[str, Any]:
        sample = str(spec).startswith(SAMPLE_PREFIX)
        path, colon, rest = str(spec)[len(SAMPLE_PREFIX) if sample else 0:].partition(":")
        path = SAMPLE_PREFIX + path if sample else path
        return module(Path(path), "--target-module",
                      parse_params(rest.split(","), "--target-module", source) if colon else None)
    raw: dict[str, Any] = {"patch": module(Path(patch), "PATCH", parse_params(params, "--param", source)),
                           "target_modules": [target(t) for t in targets]}
    if build_targets:
        if "diff" not in raw["patch"]:
            raise ConfigError("--build-target goes with a source diff", source=source, field="--build-target")
        raw["patch"]["build_targets"] = list(build_targets)
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
