"""Scenarios: a YAML file → a validated, frozen ``Scenario``.

One scenario is one patch under test plus how to exercise it; it runs once per
kernel. Paths are relative to the YAML file. Every error names the file, the
line and the field (see ``yamlconf``). The format is documented in README.md.
"""
from __future__ import annotations

import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Optional

from ..core import yamlconf
from ..core.errors import ConfigError
from ..core.yamlconf import Field

CHECKS = ("build", "compat", "load", "transition", "probe", "service", "dmesg", "taint", "revert")
VERDICTS = ("pass", "fail", "error")
ON_STALL = ("fail", "signal", "force")


def _one_of(choices: tuple[str, ...]):
    return lambda v: None if v in choices else f"must be one of {', '.join(choices)}, not {v!r}"


def _regex(v: str) -> Optional[str]:
    try:
        re.compile(v)
    except re.error as exc:
        return f"not a valid regular expression: {exc}"
    return None


def _positive(v: float) -> Optional[str]:
    return None if v > 0 else f"must be positive, not {v!r}"


def _not_negative(v: float) -> Optional[str]:
    return None if v >= 0 else f"must not be negative, not {v!r}"


NUM = (int, float)
_MODULE = {"source": Field(str, doc="kbuild directory, built against each kernel's headers"),
           "ko": Field(str, doc="prebuilt module; checked against the kernel before loading")}
SCHEMA: yamlconf.Schema = {
    "name": Field(str),
    "description": Field(str, default=""),
    "kernels": Field(list, items=str),
    "patch": Field(dict, required=True, schema={
        **_MODULE,
        "build_for": Field(str, doc="build against this kernel instead (compat testing)")}),
    "target_modules": Field(list, items=_MODULE, default=[]),
    "probe": Field(dict, schema={
        "command": Field(str),
        "interval": Field(NUM, check=_positive),
        "expect": Field(dict, schema={"before": Field(str, check=_regex),
                                      "patched": Field(str, check=_regex),
                                      "after": Field(str, check=_regex)})}),
    "service": Field(dict, schema={
        "enabled": Field(bool, default=True),
        "port": Field(int, check=lambda p: None if 0 < p < 65536 else f"not a port: {p}"),
        "path": Field(str), "rate": Field(NUM, check=_positive), "timeout": Field(NUM, check=_positive),
        "command": Field(str), "serve_file": Field(str)}),
    "stress": Field(dict, schema={"enabled": Field(bool, default=True), "args": Field(str)}),
    "timeline": Field(dict, schema={"baseline": Field(NUM, default=5, check=_not_negative),
                                    "patched": Field(NUM, default=5, check=_not_negative),
                                    "cooldown": Field(NUM, default=3, check=_not_negative)}),
    "transition": Field(dict, schema={"timeout": Field(NUM, check=_positive),
                                      "on_stall": Field(str, default="fail", check=_one_of(ON_STALL))}),
    "thresholds": Field(dict, schema={
        "max_latency": Field(NUM, default=1.0, check=_positive),
        "latency_factor": Field(NUM, default=5.0, check=_positive),
        "max_gap": Field(NUM, default=1.0, check=_positive),
        "median_factor": Field(NUM, default=3.0, check=_positive),
        "min_median": Field(NUM, default=0.05, check=_positive)}),
    "expect": Field(dict, schema={
        "verdict": Field(str, default="pass", check=_one_of(VERDICTS)),
        "checks": Field(list, items=str, default=[],
                        check=lambda cs: next((f"unknown check {c!r} (known: {', '.join(CHECKS)})"
                                               for c in cs if c not in CHECKS), None)),
        "per_kernel": Field(list, default=[], items={
            "kernel": Field(str, required=True),
            "verdict": Field(str, required=True, check=_one_of(VERDICTS)),
            "checks": Field(list, items=str, default=[]),
            "reason": Field(str, required=True)})}),
}


@dataclass(frozen=True)
class ModuleInput:
    source: Optional[Path] = None
    ko: Optional[Path] = None
    build_for: Optional[str] = None

    @property
    def label(self) -> str:
        return str(self.source or self.ko)


@dataclass(frozen=True)
class Expectation:
    verdict: str = "pass"
    checks: tuple[str, ...] = ()
    reason: str = ""


@dataclass(frozen=True)
class Scenario:
    name: str
    path: Optional[Path]
    patch: ModuleInput
    description: str = ""
    kernels: Optional[tuple[str, ...]] = None       # None: every defined kernel
    targets: tuple[ModuleInput, ...] = ()
    probe_command: Optional[str] = None
    probe_interval: Optional[float] = None
    probe_expect: dict[str, str] = field(default_factory=dict)   # phase -> regex
    service: dict[str, Any] = field(default_factory=dict)        # ServiceSpec fields given
    service_enabled: bool = True
    serve_file: Optional[str] = None
    stress: dict[str, Any] = field(default_factory=dict)         # StressSpec fields given
    baseline: float = 5.0
    patched: float = 5.0
    cooldown: float = 3.0
    transition_timeout: Optional[float] = None      # KVM seconds; None: Timeouts.transition
    on_stall: str = "fail"
    max_latency: float = 1.0
    latency_factor: float = 5.0
    max_gap: float = 1.0
    median_factor: float = 3.0
    min_median: float = 0.05
    expect: Expectation = Expectation()
    per_kernel: dict[str, Expectation] = field(default_factory=dict)

    def expectation(self, kernel: str) -> Expectation:
        return self.per_kernel.get(kernel, self.expect)


def _module(raw: dict, loaded: yamlconf.Loaded, name: str, base: Path) -> ModuleInput:
    src, ko = raw.get("source"), raw.get("ko")
    if bool(src) == bool(ko):
        raise loaded.error("give exactly one of source (a kbuild directory) or ko (a built module)",
                           name)
    path = (base / (src or ko)).resolve()
    if src and not path.is_dir():
        raise loaded.error(f"source directory {path} does not exist", f"{name}.source")
    if ko and not path.is_file():
        raise loaded.error(f"module {path} does not exist", f"{name}.ko")
    return ModuleInput(source=path if src else None, ko=path if ko else None,
                       build_for=raw.get("build_for"))


def load(path: Path) -> Scenario:
    path = Path(path)
    loaded = yamlconf.load(path, SCHEMA)
    v, base = loaded.values, path.resolve().parent
    probe, service, timeline = v["probe"], v["service"], v["timeline"]
    expect = v["expect"]
    per_kernel = {}
    for i, pk in enumerate(expect["per_kernel"]):
        per_kernel[pk["kernel"]] = Expectation(pk["verdict"], tuple(pk["checks"]), pk["reason"])
    if probe["expect"] and any(probe["expect"].values()) and not probe["command"]:
        raise loaded.error("probe expectations need a probe command", "probe.expect")
    svc = {k: service[k] for k in ("port", "path", "rate", "timeout", "command")
           if service[k] is not None}
    return Scenario(
        name=v["name"] or path.stem, path=path, description=v["description"],
        patch=_module(v["patch"], loaded, "patch", base),
        kernels=tuple(v["kernels"]) if v["kernels"] is not None else None,
        targets=tuple(_module(t, loaded, f"target_modules[{i}]", base)
                      for i, t in enumerate(v["target_modules"])),
        probe_command=probe["command"], probe_interval=probe["interval"],
        probe_expect={k: r for k, r in (probe["expect"] or {}).items() if r},
        service=svc, service_enabled=service["enabled"], serve_file=service["serve_file"],
        stress={k: x for k, x in v["stress"].items() if x is not None},
        baseline=float(timeline["baseline"]), patched=float(timeline["patched"]),
        cooldown=float(timeline["cooldown"]),
        transition_timeout=v["transition"]["timeout"], on_stall=v["transition"]["on_stall"],
        max_latency=float(v["thresholds"]["max_latency"]),
        latency_factor=float(v["thresholds"]["latency_factor"]),
        max_gap=float(v["thresholds"]["max_gap"]),
        median_factor=float(v["thresholds"]["median_factor"]),
        min_median=float(v["thresholds"]["min_median"]),
        expect=Expectation(expect["verdict"], tuple(expect["checks"])), per_kernel=per_kernel)


def from_patch(patch: Path, *, targets: tuple[Path, ...] = (), probe: Optional[str] = None,
               expect_patched: Optional[str] = None, duration: Optional[float] = None,
               serve_file: Optional[str] = None) -> Scenario:
    """The scenario behind ``livepatch-lab check PATCH ...`` (a directory or a .ko)."""
    def module(p: Path, what: str) -> ModuleInput:
        p = p.resolve()
        if p.is_dir():
            return ModuleInput(source=p)
        if p.is_file() and p.suffix == ".ko":
            return ModuleInput(ko=p)
        raise ConfigError(f"{p} is neither a kbuild directory nor a .ko file", field=what)
    if expect_patched:
        err = _regex(expect_patched)
        if err:
            raise ConfigError(err, field="--expect-patched")
    if expect_patched and not probe:
        raise ConfigError("--expect-patched needs --probe", field="--expect-patched")
    hold = {} if duration is None else {"patched": float(duration)}
    return Scenario(name=Path(patch).stem, path=None, patch=module(Path(patch), "PATCH"),
                    targets=tuple(module(t, "--target-module") for t in targets),
                    probe_command=probe,
                    probe_expect={"patched": expect_patched} if expect_patched else {},
                    serve_file=serve_file, **hold)
