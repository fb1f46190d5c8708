// SPDX-License-Identifier: GPL-2.0
/*
 * livepatch-lab: second patch of the cumulative series of upgrade-v1, done
 * right. A cumulative patch carries every fix of the ones it replaces, so it
 * replaces both cmdline_proc_show() and version_proc_show() again:
 * /proc/cmdline reads "lab-upgrade: v2 cmdline", /proc/version
 * "lab-upgrade: v2 version". With .replace set, once its transition
 * completes the kernel disables lab_upgrade_v1 and removes its sysfs
 * directory; lab_upgrade_v1 can then be unloaded. Disabling v2 afterwards
 * returns the kernel to its original code, not to v1.
 * The lab must see both v2 lines and no v1 patch left.
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

static int lab_upgrade_v2_cmdline_show(struct seq_file *m, void *v)
{
	seq_puts(m, "lab-upgrade: v2 cmdline\n");
	return 0;
}

static int lab_upgrade_v2_version_show(struct seq_file *m, void *v)
{
	seq_puts(m, "lab-upgrade: v2 version\n");
	return 0;
}

static struct klp_func lab_upgrade_v2_funcs[] = {
	{
		.old_name = "cmdline_proc_show",
		.new_func = lab_upgrade_v2_cmdline_show,
	},
	{
		.old_name = "version_proc_show",
		.new_func = lab_upgrade_v2_version_show,
	},
	{ }
};

static struct klp_object lab_upgrade_v2_objs[] = {
	{
		.name = NULL,			/* vmlinux */
		.funcs = lab_upgrade_v2_funcs,
	},
	{ }
};

static struct klp_patch lab_upgrade_v2_patch = {
	.mod = THIS_MODULE,
	.objs = lab_upgrade_v2_objs,
	.replace = true,		/* cumulative: replaces lab_upgrade_v1 */
};

static int __init lab_upgrade_v2_init(void)
{
	return klp_enable_patch(&lab_upgrade_v2_patch);
}

static void __exit lab_upgrade_v2_exit(void)
{
}

module_init(lab_upgrade_v2_init);
module_exit(lab_upgrade_v2_exit);
MODULE_DESCRIPTION("livepatch-lab: cumulative patch v2 of cmdline_proc_show and version_proc_show");
MODULE_LICENSE("GPL");
MODULE_INFO(livepatch, "Y");
