// SPDX-License-Identifier: GPL-2.0
/*
 * livepatch-lab: a patch of a module that is loaded later. Its only
 * klp_object is the module "lab_late" (scenarios/patches/late), whose
 * lab_late_show() it replaces: /proc/lab_late reads "lab_late: patched".
 * Loaded while lab_late is absent, it loads and enables fine (nothing to
 * patch yet, its transition completes at once). When lab_late is loaded,
 * the kernel prints "livepatch: applying patch 'lab_late_fix' to loading
 * module 'lab_late'" and the module runs the patched code from the start;
 * rmmod lab_late prints "livepatch: reverting patch 'lab_late_fix' on
 * unloading module 'lab_late'". It has no symbol dependency on lab_late, so
 * either module may be loaded and unloaded in any order.
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

static int lab_late_fix_show(struct seq_file *m, void *v)
{
	seq_puts(m, "lab_late: patched\n");
	return 0;
}

static struct klp_func lab_late_fix_funcs[] = {
	{
		.old_name = "lab_late_show",
		.new_func = lab_late_fix_show,
	},
	{ }
};

static struct klp_object lab_late_fix_objs[] = {
	{
		.name = "lab_late",		/* a module, maybe not loaded yet */
		.funcs = lab_late_fix_funcs,
	},
	{ }
};

static struct klp_patch lab_late_fix_patch = {
	.mod = THIS_MODULE,
	.objs = lab_late_fix_objs,
};

static int __init lab_late_fix_init(void)
{
	return klp_enable_patch(&lab_late_fix_patch);
}

static void __exit lab_late_fix_exit(void)
{
}

module_init(lab_late_fix_init);
module_exit(lab_late_fix_exit);
MODULE_DESCRIPTION("livepatch-lab: patch of lab_late_show in module lab_late, loaded before it");
MODULE_LICENSE("GPL");
MODULE_INFO(livepatch, "Y");
