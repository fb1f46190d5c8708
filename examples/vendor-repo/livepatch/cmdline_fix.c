// SPDX-License-Identifier: GPL-2.0
/*
 * An example vendor livepatch (livepatch-lab: examples/vendor-repo).
 *
 * The "fix": while this patch is enabled, reading /proc/cmdline no longer
 * shows the boot command line, only one fixed line, FIX_LINE below. That is
 * easy to see from user space, so the scenarios' probe (`cat /proc/cmdline`)
 * tells an unpatched kernel from a patched one, and the revert from both.
 *
 * cmdline_proc_show() lives in fs/proc/cmdline.c, built into vmlinux on
 * every kernel line the lab tests, with the same signature since 4.x.
 */
#define pr_fmt(fmt) KBUILD_MODNAME ": " fmt

#include <linux/kernel.h>
#include <linux/livepatch.h>
#include <linux/module.h>
#include <linux/seq_file.h>

#define FIX_LINE "vendor-fix: cmdline hidden"

/* The replacement: same prototype as cmdline_proc_show(). */
static int fixed_cmdline_proc_show(struct seq_file *m, void *v)
{
	seq_printf(m, "%s\n", FIX_LINE);
	return 0;
}

static struct klp_func vmlinux_funcs[] = {
	{
		.old_name = "cmdline_proc_show",
		.new_func = fixed_cmdline_proc_show,
	},
	{ }	/* end of list */
};

static struct klp_object patched_objects[] = {
	{
		/* .name unset: the function is in vmlinux, not in a module */
		.funcs = vmlinux_funcs,
	},
	{ }	/* end of list */
};

static struct klp_patch cmdline_fix = {
	.mod = THIS_MODULE,
	.objs = patched_objects,
};

static int __init cmdline_fix_init(void)
{
	int ret = klp_enable_patch(&cmdline_fix);

	if (ret)
		pr_err("could not enable the patch: %d\n", ret);
	return ret;
}

/* Nothing to undo: the livepatch core disables the patch before rmmod is allowed. */
static void __exit cmdline_fix_exit(void)
{
}

module_init(cmdline_fix_init);
module_exit(cmdline_fix_exit);
MODULE_DESCRIPTION("Example vendor livepatch: /proc/cmdline reads '" FIX_LINE "'");
MODULE_LICENSE("GPL");
MODULE_INFO(livepatch, "Y");
