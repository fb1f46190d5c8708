// SPDX-License-Identifier: GPL-2.0
/*
 * livepatch-lab: first patch of a cumulative series (atomic replace).
 * Replaces two vmlinux functions: cmdline_proc_show() and version_proc_show()
 * (fs/proc/cmdline.c, fs/proc/version.c), so that while it is the active
 * patch /proc/cmdline reads "lab-upgrade: v1 cmdline" and /proc/version
 * "lab-upgrade: v1 version". It sets .replace like every patch of the
 * series: loaded over other patches, it replaces them too.
 * The lab must see both v1 lines, then (after upgrade-v2 replaces it)
 * /sys/kernel/livepatch/lab_upgrade_v1 gone and the module unloadable.
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

static int lab_upgrade_v1_cmdline_show(struct seq_file *m, void *v)
{
	seq_puts(m, "lab-upgrade: v1 cmdline\n");
	return 0;
}

static int lab_upgrade_v1_version_show(struct seq_file *m, void *v)
{
	seq_puts(m, "lab-upgrade: v1 version\n");
	return 0;
}

static struct klp_func lab_upgrade_v1_funcs[] = {
	{
		.old_name = "cmdline_proc_show",
		.new_func = lab_upgrade_v1_cmdline_show,
	},
	{
		.old_name = "version_proc_show",
		.new_func = lab_upgrade_v1_version_show,
	},
	{ }
};

static struct klp_object lab_upgrade_v1_objs[] = {
	{
		.name = NULL,			/* vmlinux */
		.funcs = lab_upgrade_v1_funcs,
	},
	{ }
};

static struct klp_patch lab_upgrade_v1_patch = {
	.mod = THIS_MODULE,
	.objs = lab_upgrade_v1_objs,
	.replace = true,
};

static int __init lab_upgrade_v1_init(void)
{
	return klp_enable_patch(&lab_upgrade_v1_patch);
}

static void __exit lab_upgrade_v1_exit(void)
{
}

module_init(lab_upgrade_v1_init);
module_exit(lab_upgrade_v1_exit);
MODULE_DESCRIPTION("livepatch-lab: cumulative patch v1 of cmdline_proc_show and version_proc_show");
MODULE_LICENSE("GPL");
MODULE_INFO(livepatch, "Y");
