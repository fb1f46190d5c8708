// SPDX-License-Identifier: GPL-2.0
/*
 * livepatch-lab: a second patch of the cumulative series of upgrade-v1 that
 * forgets one of v1's fixes. It replaces cmdline_proc_show() only
 * (/proc/cmdline reads "lab-upgrade: v2 cmdline") and no longer carries
 * version_proc_show(). With .replace set, the kernel gives every function
 * of the replaced patches that the new one lacks a "nop" entry: once the
 * transition completes, version_proc_show() runs its ORIGINAL code again
 * and /proc/version prints the kernel's real banner. The lost fix is
 * silent: no message, no error, the load succeeds.
 * The lab must see /proc/version revert to the original after the upgrade.
 */
#define pr_fmt(fmt) KBUILD_MODNAME ": " fmt

#include <linux/kernel.h>
#include <linux/module.h>
#include <linux/version.h>
#include <linux/livepatch.h>
#include <linux/seq_file.h>

#if LINUX_VERSION_CODE < KERNEL_VERSION(5, 1, 0)
#error "livepatch-lab patches use klp_enable_patch() (Linux 5.1 and later)"
#endif

static int lab_upgrade_v2_drops_cmdline_show(struct seq_file *m, void *v)
{
	seq_puts(m, "lab-upgrade: v2 cmdline\n");
	return 0;
}

/* version_proc_show() deliberately missing: the fix v1 carried is dropped */
static struct klp_func lab_upgrade_v2_drops_funcs[] = {
	{
		.old_name = "cmdline_proc_show",
		.new_func = lab_upgrade_v2_drops_cmdline_show,
	},
	{ }
};

static struct klp_object lab_upgrade_v2_drops_objs[] = {
	{
		.name = NULL,			/* vmlinux */
		.funcs = lab_upgrade_v2_drops_funcs,
	},
	{ }
};

static struct klp_patch lab_upgrade_v2_drops_patch = {
	.mod = THIS_MODULE,
	.objs = lab_upgrade_v2_drops_objs,
	.replace = true,		/* cumulative: replaces lab_upgrade_v1 */
};

static int __init lab_upgrade_v2_drops_init(void)
{
	return klp_enable_patch(&lab_upgrade_v2_drops_patch);
}

static void __exit lab_upgrade_v2_drops_exit(void)
{
}

module_init(lab_upgrade_v2_drops_init);
module_exit(lab_upgrade_v2_drops_exit);
MODULE_DESCRIPTION("livepatch-lab: cumulative patch v2 that drops v1's version_proc_show fix");
MODULE_LICENSE("GPL");
MODULE_INFO(livepatch, "Y");
