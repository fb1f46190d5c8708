// SPDX-License-Identifier: GPL-2.0
/*
 * livepatch-lab: a patch that works but warns. The replacement of
 * cmdline_proc_show() hits WARN_ON_ONCE(1) on its first call (a "WARNING:"
 * with a stack dump in dmesg, taint W), then behaves like the good patch.
 * The lab must fail it (dmesg, taint).
 */
#define pr_fmt(fmt) KBUILD_MODNAME ": " fmt

#include <linux/kernel.h>
#include <linux/module.h>
#include <linux/version.h>
#include <linux/bug.h>
#include <linux/livepatch.h>
#include <linux/seq_file.h>

#if LINUX_VERSION_CODE < KERNEL_VERSION(5, 1, 0)
#error "livepatch-lab patches use klp_enable_patch() (Linux 5.1 and later)"
#endif

static int lab_warn_cmdline_show(struct seq_file *m, void *v)
{
	WARN_ON_ONCE(1);
	seq_puts(m, "livepatch-lab: patched\n");
	return 0;
}

static struct klp_func lab_warn_funcs[] = {
	{
		.old_name = "cmdline_proc_show",
		.new_func = lab_warn_cmdline_show,
	},
	{ }
};

static struct klp_object lab_warn_objs[] = {
	{
		.name = NULL,			/* vmlinux */
		.funcs = lab_warn_funcs,
	},
	{ }
};

static struct klp_patch lab_warn_patch = {
	.mod = THIS_MODULE,
	.objs = lab_warn_objs,
};

static int __init lab_warn_init(void)
{
	return klp_enable_patch(&lab_warn_patch);
}

static void __exit lab_warn_exit(void)
{
}

module_init(lab_warn_init);
module_exit(lab_warn_exit);
MODULE_DESCRIPTION("livepatch-lab: cmdline_proc_show replacement that warns once");
MODULE_LICENSE("GPL");
MODULE_INFO(livepatch, "Y");
