"""The scenario format as one schema (``core.yamlconf``): every field with its type, default
and check, and the small checks themselves. YAML files and ``check``'s options both go
through it, so a bad value is refused alike, naming the file and line or the option.
"""
from __future__ import annotations

import math
import re
from typing import Any, Optional

from ...core import yamlconf
from ...core.yamlconf import Field
from . import hookcmd
from .specs import (ACTIONS, APPLY_TOOLS, CHECKS, DEBUG_FACILITIES, ON_STALL, OUTCOMES, RELEASE_FIELDS,
                    VERDICTS, OverheadSpec, ProbeSpec, ServiceSpec, SoakSpec, StressSpec, Thresholds,
                    TimelineSpec)


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


def _label(v: str) -> Optional[str]:
    """One line of text a reader sees on the report: a name, a version, a ticket, a person."""
    if not v.strip():
        return "must not be empty"
    if any(ord(c) < 32 or ord(c) == 127 for c in v):
        return f"must be one line of text (no line breaks or control characters), not {v!r}"
    return None if len(v) <= LABEL_MAX else f"must be at most {LABEL_MAX} characters, not {len(v)}"


LABEL_MAX = 200


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


PARAM_NAME = re.compile(r"[A-Za-z_][A-Za-z0-9_]*")
_KEY = re.compile(r"[A-Za-z0-9][\w.+-]*")


def _params(v: dict) -> Optional[str]:
    for name, value in v.items():
        if not isinstance(name, str) or not PARAM_NAME.fullmatch(name):
            return f"not a module parameter name: {name!r}"
        if not isinstance(value, (str, int, float)) or (isinstance(value, float) and not math.isfinite(value)):
            return f"{name}: must be a string, a number or true/false, not {value!r}"
    return None


def plain_name(v: str) -> Optional[str]:
    return None if _KEY.fullmatch(v) else f"must be a plain name (letters, digits, . _ + -), not {v!r}"


NUM = (int, float)
_MODULE = {"source": Field(str, doc="kbuild directory, built against each kernel's headers"),
           "ko": Field(str, doc="prebuilt module; checked against the kernel before loading"),
           "params": Field(dict, default={}, check=_params, doc="module parameters: name -> value")}
_STEP = {**{a: Field(NUM if a == "hold" else str, check=_seconds if a == "hold" else plain_name)
            for a in ACTIONS},
         "probe": Field(str, check=_regex, doc="what the probe shows in the hold after this step"),
         "expect": Field(str, default="ok", check=_one_of(OUTCOMES))}


def _build_targets(v: list) -> Optional[str]:
    return next((f"a build target is a module's path in the kernel tree (fs/nfsd/nfsd.ko), not {t!r}"
                 for t in v if not re.fullmatch(r"[A-Za-z0-9_./-]+\.ko", t) or ".." in t.split("/")), None)


# a patch may also be a source diff, which kpatch-build turns into a module for each kernel
_PATCH = {**_MODULE,
          "diff": Field(str, doc="unified diff against the kernel source (-p1 paths), built by kpatch-build"),
          "build_targets": Field(list, items=str, default=[], check=_build_targets,
                                 doc="modules the diff changes, built too (kpatch-build -t)")}
SCHEMA: yamlconf.Schema = {
    "name": Field(str, check=plain_name),
    "description": Field(str, default=""),
    "kernels": Field(list, items=str),
    "tags": Field(list, items=str, default=[], check=lambda ts: next(
        (f"a tag is a pytest marker name (letters, digits, _), not {t!r}" for t in ts
         if not re.fullmatch(r"[A-Za-z_]\w*", t)), None), doc="pytest markers for the scenario's items"),
    "patch": Field(dict, schema={
        **_PATCH,
        "build_for": Field(str, doc="build against this kernel instead (compat testing)")}),
    "upgrade_from": Field(dict, schema=_PATCH, doc="the patch in the field, loaded before the baseline"),
    "patches": Field(dict, values=_PATCH, check=lambda v: next((plain_name(k) for k in v if plain_name(k)), None),
                     doc="named patches for `steps`: name -> module"),
    "steps": Field(list, items=_STEP),
    "target_modules": Field(list, items={**_MODULE, "name": Field(str, check=plain_name)}, default=[]),
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
    "release": Field(dict, schema={k: Field(str, as_text=True, check=_label) for k in RELEASE_FIELDS},
                     doc="the patch the runs sign off (name, version, ticket, approver): shown on the report"),
    "expect": Field(dict, schema={
        "verdict": Field(str, default="pass", check=_one_of(VERDICTS)),
        "checks": Field(list, items=str, default=[], check=_checks),
        "per_kernel": Field(list, default=[], items={
            "kernel": Field(str, required=True),
            "verdict": Field(str, required=True, check=_one_of(VERDICTS)),
            "checks": Field(list, items=str, default=[], check=_checks),
            "reason": Field(str, required=True)})}),
}
