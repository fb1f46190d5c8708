// SPDX-License-Identifier: GPL-2.0
/*
 * livepatch-lab: the reference patch. Replaces cmdline_proc_show()
 * (fs/proc/cmdline.c, in vmlinux) so that /proc/cmdline reads
 * "livepatch-lab: patched" while the patch is enabled.
 * Must pass on every kernel of the matrix.
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

static int lab_good_cmdline_show(struct seq_file *m, void *v)
{
	seq_puts(m, "livepatch-lab: patched\n");
	return 0;
}

static struct klp_func lab_good_funcs[] = {
	{
		.old_name = "cmdline_proc_show",
		.new_func = lab_good_cmdline_show,
	},
	{ }
};

static struct klp_object lab_good_objs[] = {
	{
		.name = NULL,			/* vmlinux */
		.funcs = lab_good_funcs,
	},
	{ }
};

static struct klp_patch lab_good_patch = {
	.mod = THIS_MODULE,
	.objs = lab_good_objs,
};

static int __init lab_good_init(void)
{
	return klp_enable_patch(&lab_good_patch);
}

static void __exit lab_good_exit(void)
{
}

module_init(lab_good_init);
module_exit(lab_good_exit);
MODULE_DESCRIPTION("livepatch-lab: good patch of cmdline_proc_show");
MODULE_LICENSE("GPL");
MODULE_INFO(livepatch, "Y");
