"""Command hooks: a scenario's own guest commands that load and revert a patch.

A template names the module with ``{module}`` (the ``.ko``'s path in the
guest) and ``{name}`` (the module's name, which is also its patch's name in
/sys/kernel/livepatch). Each value goes in shell-quoted, so a template must not
quote a placeholder itself. ``${var}`` is the shell's, not a placeholder.
"""
from __future__ import annotations

import re
import shlex
from typing import Optional

PLACEHOLDERS = ("module", "name")
_PLACEHOLDER = re.compile(r"(?<!\$)\{(\w*)\}")
_QUOTED = re.compile(r"""(['"])\{(?:module|name)\}\1""")


def check(template: str) -> Optional[str]:
    """Why ``template`` is not a usable hook command, or None."""
    if not template.strip():
        return "must not be empty"
    unknown = sorted({m.group(1) for m in _PLACEHOLDER.finditer(template)} - set(PLACEHOLDERS))
    if unknown:
        return (f"unknown placeholder {{{unknown[0]}}} (known: {{module}}, the .ko in the guest; {{name}}, "
                "the module's name)")
    quoted = _QUOTED.search(template)
    if quoted:
        return f"write {quoted.group(0)[1:-1]} without quotes: the lab quotes each value for the shell"
    return None


def render(template: str, module: str, name: str) -> str:
    """The command line: each placeholder replaced by its value, shell-quoted."""
    values = {"module": module, "name": name}
    return _PLACEHOLDER.sub(lambda m: shlex.quote(values[m.group(1)]), template)
