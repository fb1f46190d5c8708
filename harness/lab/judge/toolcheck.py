"""What a vendor's tool or a hook said (apply.py), against what the kernel showed.

Pure, like the verdict it serves: a tool's record (``record.ToolRun``: its rc,
time, last words and, after a load, the kernel state it left) goes in, the words
of the verdict's reasons come out. The kernel decides
whether a transition completed; the tool's word is only compared with it.
"""
from __future__ import annotations

from typing import Optional

from ..run.record import Reason, Revert, ToolRun as Tool

_KERNEL_WORDS = {"gone": "gone from the kernel", "in transition": "still in transition",
                 "disabled": "disabled", "patched": "applied"}


def _who(tool: Tool) -> str:
    return f"{tool.tool} {tool.op}"


def _said(tool: Tool) -> str:
    """The tool's last words; none for a tool killed mid-sentence."""
    return f": {tool.said[:160]!r}" if tool.said and tool.rc is not None else ""


def _ended(tool: Tool) -> str:
    if tool.rc is None:
        return f"did not end within {tool.deadline:.0f} s (killed)"
    took = f" after {tool.seconds:.0f} s" if tool.seconds is not None else ""
    return f"{'succeeded' if tool.rc == 0 else 'failed'} (rc {tool.rc}{took})"


def _kernel(tool: Tool) -> str:
    return _KERNEL_WORDS.get(tool.kernel or "", str(tool.kernel))


def after_stall(tool: Optional[Tool]) -> str:
    """To add to a stalled transition's reason: what the tool did about it."""
    if not tool:
        return ""
    if tool.rc == 0 and tool.kernel == "patched":
        return f"; {_who(tool)} waited longer and {_ended(tool)}: the kernel had completed the transition by then"
    if tool.rc == 0:
        return (f"; yet {_who(tool)} {_ended(tool)}{_said(tool)}: the tool and the kernel disagree (the patch is "
                f"{_kernel(tool)})")
    return f"; {_who(tool)} {_ended(tool)}{_said(tool)}; after it the patch is {_kernel(tool)}"


def after_transition(tool: Tool) -> list[Reason]:
    """The kernel completed the transition: the tool must agree, and leave the patch applied."""
    if tool.kernel != "patched":
        return [Reason("transition", f"the transition completed, but once {_who(tool)} ended ({_ended(tool)}"
                                     f"{_said(tool)}) the patch was {_kernel(tool)}")]
    if tool.rc != 0:
        return [Reason("load", f"{_who(tool)} {_ended(tool)}{_said(tool)} although the kernel completed the "
                               "transition: the tool and the kernel disagree")]
    return []


def but_it_said(tool: Optional[Tool]) -> str:
    """To add to a revert's reason when the revert tool claimed success."""
    return f" although {_who(tool)} {_ended(tool)}" if tool and tool.rc == 0 else ""


def after_revert(revert: Revert) -> list[Reason]:
    """A revert tool that failed: in its words, and whether the kernel says otherwise."""
    tool = revert.tool
    if not tool or tool.rc == 0:
        return []
    agree = (": the tool and the kernel disagree (the kernel reverted the patch and its module is gone)"
             if revert.sysfs_gone and revert.module_gone else "")
    return [Reason("revert", f"{_who(tool)} {_ended(tool)}{_said(tool)}{agree}")]
