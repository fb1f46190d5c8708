// SPDX-License-Identifier: GPL-2.0
/*
 * livepatch-lab: a broken patch that hangs the whole machine. The
 * replacement of cmdline_proc_show() stops every CPU (stop_machine) and never
 * lets them go: all CPUs spin with interrupts off, so nothing, not even the
 * console, says what happened. The first read of /proc/cmdline while the
 * patch is enabled freezes the guest.
 * The lab must notice the silence within its deadlines, fail the patch with
 * what evidence there is, and tear the guest down.
 */
#define pr_fmt(fmt) KBUILD_MODNAME ": " fmt

#include <linux/kernel.h>
#include <linux/module.h>
#include <linux/version.h>
#include <linux/livepatch.h>
#include <linux/seq_file.h>
#include <linux/stop_machine.h>

#if LINUX_VERSION_CODE < KERNEL_VERSION(5, 1, 0)
#error "livepatch-lab patches use klp_enable_patch() (Linux 5.1 and later)"
#endif

static int lab_hang_forever(void *unused)
{
	for (;;)
		cpu_relax();
	return 0;
}

static int lab_hang_cmdline_show(struct seq_file *m, void *v)
{
	stop_machine(lab_hang_forever, NULL, NULL);
	seq_puts(m, "livepatch-lab: patched\n");
	return 0;
}

static struct klp_func lab_hang_funcs[] = {
	{
		.old_name = "cmdline_proc_show",
		.new_func = lab_hang_cmdline_show,
	},
	{ }
};

static struct klp_object lab_hang_objs[] = {
	{
		.name = NULL,			/* vmlinux */
		.funcs = lab_hang_funcs,
	},
	{ }
};

static struct klp_patch lab_hang_patch = {
	.mod = THIS_MODULE,
	.objs = lab_hang_objs,
};

static int __init lab_hang_init(void)
{
	return klp_enable_patch(&lab_hang_patch);
}

static void __exit lab_hang_exit(void)
{
}

module_init(lab_hang_init);
module_exit(lab_hang_exit);
MODULE_DESCRIPTION("livepatch-lab: cmdline_proc_show replacement that freezes every CPU");
MODULE_LICENSE("GPL");
MODULE_INFO(livepatch, "Y");
