"""A scenario's sections, from the schema's checked values to their specs, with the checks that
need more than one field or the disk: a module given as exactly one of source or ko (and a
.ko that is a livepatch), signing key and certificate together, a tool or a hook, the cost
workload's command, the image recipe, and the lifecycle's steps over named patches.
"""
from __future__ import annotations

from pathlib import Path
from typing import Optional, cast

from ...core import paths, yamlconf
from ...core.errors import ConfigError
from ...supply import modinfo, recipes
from ...supply.srcbuild import diff as srcdiff
from .schema import plain_name
from .specs import (ACTIONS, SAMPLE_PREFIX, TOOL_IMAGES, ApplySpec, ModuleSpec, OverheadSpec, SecuritySpec,
                    StepSpec)


def module_spec(raw: dict, loaded: yamlconf.Loaded, name: str, base: Path, key: Optional[str] = None,
                late: bool = False) -> ModuleSpec:
    src, ko, dif = raw.get("source"), raw.get("ko"), raw.get("diff")
    if sum(map(bool, (src, ko, dif))) != 1:
        raise loaded.error("give exactly one of source (a kbuild directory), ko (a built module)" +
                           (" or diff (a kernel source diff)" if not name.startswith("target_modules") else ""),
                           name)
    params = tuple((k, str(int(v)) if isinstance(v, bool) else str(v)) for k, v in (raw.get("params") or {}).items())
    if dif:      # read and checked now: a file that is not a diff is refused before anything runs
        dpath = (base / dif).resolve()
        try:
            srcdiff.load(dpath)
        except ConfigError as exc:
            raise loaded.error(str(exc), f"{name}.diff") from None
        if raw.get("build_for"):
            raise loaded.error("build_for applies to a module's source, not to a diff", f"{name}.build_for")
        return ModuleSpec(diff=dpath, build_targets=tuple(raw.get("build_targets") or ()), params=params,
                          key=key or raw.get("name"), late=late)
    if raw.get("build_targets"):
        raise loaded.error("build_targets go with a diff", f"{name}.build_targets")
    if src and src.startswith(SAMPLE_PREFIX):    # built from the kernel's own source at run time
        sample = src[len(SAMPLE_PREFIX):]
        if plain_name(sample):
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


def security_spec(raw: dict, loaded: yamlconf.Loaded, base: Path) -> SecuritySpec:
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


def apply_spec(raw: dict, loaded: yamlconf.Loaded) -> ApplySpec:
    if raw["tool"] and raw["command"]:
        raise loaded.error("give a tool or a command hook, not both", "apply.command")
    if raw["revert"] and not raw["command"]:
        raise loaded.error("a revert hook goes with a `command` hook (a tool reverts its own way)", "apply.revert")
    if raw["command"]:
        return ApplySpec("command", raw["command"], raw["revert"])
    return ApplySpec(raw["tool"] or ApplySpec.tool)


def overhead_spec(v: dict, loaded: yamlconf.Loaded) -> OverheadSpec:
    raw = v["overhead"]
    given = "overhead" in loaded.lines or raw["command"] is not None   # a mapping left out reads as its defaults
    if not given and v["thresholds"]["overhead"]["max_percent"] is None:
        return OverheadSpec()
    if not (raw["command"] or v["probe"]["command"]):
        raise loaded.error("the cost workload needs a command (overhead.command), or a probe command to "
                           "time", "overhead" if "overhead" in loaded.lines else "overhead.command")
    return OverheadSpec(True, raw["command"], int(raw["repeat"]), int(raw["blocks"]), int(raw["cycles"]))


def image_recipe(name: Optional[str], tool: str, loaded: yamlconf.Loaded, base: Path) -> Optional[Path]:
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


def lifecycle(v: dict, loaded: yamlconf.Loaded, base: Path,
           targets: list[dict]) -> tuple[dict[str, ModuleSpec], tuple[StepSpec, ...], set[str]]:
    """The lifecycle form: named patches and the steps over them, checked for what can be known
    before anything runs (names, one action a step, where a probe expectation is judged)."""
    if not v["steps"]:
        raise loaded.error("named patches need `steps` saying what to do with them", "patches")
    if not v["patches"]:
        raise loaded.error("steps need `patches`: name -> kbuild directory or .ko", "steps")
    patches = {k: module_spec(m, loaded, f"patches.{k}", base, key=k) for k, m in v["patches"].items()}
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
