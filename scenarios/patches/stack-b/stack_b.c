// SPDX-License-Identifier: GPL-2.0
/*
 * livepatch-lab: one of two stacked patches (stack-a, stack-b). Replaces
 * version_proc_show() only, so /proc/version reads "lab-stack: b version";
 * stack-a patches cmdline_proc_show(). Neither sets .replace: loaded one
 * after the other they stack, both stay enabled and each function shows its
 * own patch. Since Linux 5.1 any patch of a stack may be disabled first:
 * disabling lab_stack_b leaves lab_stack_a active (and the other way round).
 * The lab must see both patches enabled together, then only the survivor.
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

static int lab_stack_b_version_show(struct seq_file *m, void *v)
{
	seq_puts(m, "lab-stack: b version\n");
	return 0;
}

static struct klp_func lab_stack_b_funcs[] = {
	{
		.old_name = "version_proc_show",
		.new_func = lab_stack_b_version_show,
	},
	{ }
};

static struct klp_object lab_stack_b_objs[] = {
	{
		.name = NULL,			/* vmlinux */
		.funcs = lab_stack_b_funcs,
	},
	{ }
};

static struct klp_patch lab_stack_b_patch = {
	.mod = THIS_MODULE,
	.objs = lab_stack_b_objs,
	.replace = false,		/* stacks on whatever is installed */
};

static int __init lab_stack_b_init(void)
{
	return klp_enable_patch(&lab_stack_b_patch);
}

static void __exit lab_stack_b_exit(void)
{
}

module_init(lab_stack_b_init);
module_exit(lab_stack_b_exit);
MODULE_DESCRIPTION("livepatch-lab: stacked patch b (version_proc_show)");
MODULE_LICENSE("GPL");
MODULE_INFO(livepatch, "Y");
