"""A source fix is a unified diff with -p1 paths; anything else is refused before anything
runs, naming the file and line."""
from __future__ import annotations

from pathlib import Path

import pytest

from livepatch_lab.core.errors import ConfigError
from livepatch_lab.supply.srcbuild import diff

GOOD = """\
From: A Vendor <v@example.com>
Subject: proc: say patched

diff --git a/fs/proc/cmdline.c b/fs/proc/cmdline.c
index 1111111..2222222 100644
--- a/fs/proc/cmdline.c
+++ b/fs/proc/cmdline.c
@@ -7,6 +7,6 @@
 static int cmdline_proc_show(struct seq_file *m, void *v)
 {
-\tseq_puts(m, saved_command_line);
+\tseq_printf(m, "%s livepatched", saved_command_line);
 \tseq_putc(m, '\\n');
 \treturn 0;
 }
--- a/kernel/sys.c
+++ b/kernel/sys.c
@@ -1 +1,2 @@
 x
+y
"""


def write(tmp_path: Path, text: str, name: str = "fix.patch") -> Path:
    p = tmp_path / name
    p.write_text(text)
    return p


def test_a_git_diff_is_read_with_its_files_hunks_and_hash(tmp_path):
    d = diff.load(write(tmp_path, GOOD))
    assert d.paths == ["fs/proc/cmdline.c", "kernel/sys.c"]
    assert [(h.old_start, h.old_lines, h.new_lines) for h in d.files[0].hunks] == [(7, 6, 6)]
    assert d.hunk("kernel/sys.c", 1).header == "@@ -1 +1,2 @@"
    assert d.hunk("kernel/sys.c", 2) is None
    assert len(d.sha256) == 64


def test_a_new_file_is_a_creation():
    files = diff.parse("--- /dev/null\n+++ b/lib/new.c\n@@ -0,0 +1 @@\n+int x;\n")
    assert files[0].created and files[0].path == "lib/new.c"


@pytest.mark.parametrize("text, says", [
    ("just some text\n", "not a unified diff"),
    ("--- a/x.c\n+++ b/x.c\n", "has no hunk"),
    ("--- a/x.c\n+++ b/x.c\n@@ -1,3 +1,3 @@\n a\n-b\n+c\n", "says -3 +3 lines but has -2 +2"),
    ("--- x.c\n+++ x.c\n@@ -1 +1 @@\n-a\n+b\n", "no leading directory"),
    ("--- a/../etc/passwd\n+++ b/../etc/passwd\n@@ -1 +1 @@\n-a\n+b\n", "leaves the kernel tree"),
    ("--- a/x.c\n+++ b/x.c\n@@ -1 +1 @ junk\n", "malformed hunk header"),
    ("diff --git a/f b/f\nGIT binary patch\nliteral 1\n", "binary patches"),
])
def test_what_is_not_a_well_formed_text_diff_is_refused_naming_the_file(tmp_path, text, says):
    p = write(tmp_path, text)
    with pytest.raises(ConfigError) as e:
        diff.load(p, field="patch.diff")
    assert says in e.value.message
    assert str(p) in str(e.value) and "patch.diff" in str(e.value)


def test_the_line_of_a_bad_hunk_is_named(tmp_path):
    with pytest.raises(ConfigError) as e:
        diff.parse("--- a/x.c\n+++ b/x.c\n@@ -1,2 +1,2 @@\n a\n-b\n", "fix.patch")
    assert e.value.line == 3


def test_a_missing_diff_is_an_input_error(tmp_path):
    with pytest.raises(ConfigError, match="cannot read the diff"):
        diff.load(tmp_path / "nope.patch")


def test_diffs_are_told_from_modules_by_name_or_header(tmp_path):
    assert diff.looks_like_diff(write(tmp_path, "x", "fix.diff"))
    assert diff.looks_like_diff(write(tmp_path, GOOD, "fix.txt"))
    assert not diff.looks_like_diff(write(tmp_path, "\x7fELF", "mod.ko"))
