// SPDX-License-Identifier: GPL-2.0
/*
 * livepatch-lab: a broken patch that brings the whole kernel down. The
 * replacement of cmdline_proc_show() calls panic(): the first read of
 * /proc/cmdline while the patch is enabled ends the guest (panic=-1 reboots,
 * and the lab's QEMU does not reboot: it exits).
 * The lab must fail it from the console (dmesg is gone with the guest), at
 * once rather than at a deadline, and tear down what is left.
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

static int lab_panic_cmdline_show(struct seq_file *m, void *v)
{
	panic("livepatch-lab: lab_panic was called");
	return 0;
}

static struct klp_func lab_panic_funcs[] = {
	{
		.old_name = "cmdline_proc_show",
		.new_func = lab_panic_cmdline_show,
	},
	{ }
};

static struct klp_object lab_panic_objs[] = {
	{
		.name = NULL,			/* vmlinux */
		.funcs = lab_panic_funcs,
	},
	{ }
};

static struct klp_patch lab_panic_patch = {
	.mod = THIS_MODULE,
	.objs = lab_panic_objs,
};

static int __init lab_panic_init(void)
{
	return klp_enable_patch(&lab_panic_patch);
}

static void __exit lab_panic_exit(void)
{
}

module_init(lab_panic_init);
module_exit(lab_panic_exit);
MODULE_DESCRIPTION("livepatch-lab: cmdline_proc_show replacement that panics");
MODULE_LICENSE("GPL");
MODULE_INFO(livepatch, "Y");
