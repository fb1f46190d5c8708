// SPDX-License-Identifier: GPL-2.0
/*
 * livepatch-lab: the target module of the late-fix patch (not a livepatch).
 * /proc/lab_late reads "lab_late: original", printed by lab_late_show(),
 * the function late-fix replaces. The point is the order: lab_late_fix is
 * loaded while this module does not exist yet (its klp_object waits), and
 * loading this module then makes the kernel apply the patch to it before
 * its init runs ("livepatch: applying patch 'lab_late_fix' to loading
 * module 'lab_late'"): /proc/lab_late reads patched from its first read.
 * Unloading it while patched reverts the patch on it ("livepatch: reverting
 * patch 'lab_late_fix' on unloading module 'lab_late'"); the patch stays
 * enabled and applies again if the module comes back.
 */
#define pr_fmt(fmt) KBUILD_MODNAME ": " fmt

#include <linux/kernel.h>
#include <linux/module.h>
#include <linux/proc_fs.h>
#include <linux/seq_file.h>

/* global and noinline so that it stays one patchable symbol in kallsyms */
int lab_late_show(struct seq_file *m, void *v);

static struct proc_dir_entry *lab_late_proc;

noinline int lab_late_show(struct seq_file *m, void *v)
{
	seq_puts(m, "lab_late: original\n");
	return 0;
}

static int __init lab_late_init(void)
{
	lab_late_proc = proc_create_single("lab_late", 0444, NULL, lab_late_show);
	return lab_late_proc ? 0 : -ENOMEM;
}

static void __exit lab_late_exit(void)
{
	proc_remove(lab_late_proc);
}

module_init(lab_late_init);
module_exit(lab_late_exit);
MODULE_DESCRIPTION("livepatch-lab: target module loaded after its livepatch (/proc/lab_late)");
MODULE_LICENSE("GPL");
