// SPDX-License-Identifier: GPL-2.0
/*
 * livepatch-lab: a broken patch. The replacement of cmdline_proc_show()
 * dereferences a NULL pointer: every read of /proc/cmdline while the patch
 * is enabled oopses in the reading task's context (the task is killed, the
 * kernel carries on unless panic_on_oops is set).
 * The lab must fail it (dmesg: Oops / BUG: kernel NULL pointer dereference).
 */
#define pr_fmt(fmt) KBUILD_MODNAME ": " fmt

#include <linux/kernel.h>
#include <linux/module.h>
#include <linux/version.h>
#include <linux/compiler.h>
#include <linux/livepatch.h>
#include <linux/seq_file.h>

#if LINUX_VERSION_CODE < KERNEL_VERSION(5, 1, 0)
#error "livepatch-lab patches use klp_enable_patch() (Linux 5.1 and later)"
#endif

static int lab_oops_cmdline_show(struct seq_file *m, void *v)
{
	const int *bad = NULL;

	/* keep the compiler from proving the load away or turning it into a trap */
	OPTIMIZER_HIDE_VAR(bad);
	seq_printf(m, "livepatch-lab: patched %d\n", READ_ONCE(*bad));
	return 0;
}

static struct klp_func lab_oops_funcs[] = {
	{
		.old_name = "cmdline_proc_show",
		.new_func = lab_oops_cmdline_show,
	},
	{ }
};

static struct klp_object lab_oops_objs[] = {
	{
		.name = NULL,			/* vmlinux */
		.funcs = lab_oops_funcs,
	},
	{ }
};

static struct klp_patch lab_oops_patch = {
	.mod = THIS_MODULE,
	.objs = lab_oops_objs,
};

static int __init lab_oops_init(void)
{
	return klp_enable_patch(&lab_oops_patch);
}

static void __exit lab_oops_exit(void)
{
}

module_init(lab_oops_init);
module_exit(lab_oops_exit);
MODULE_DESCRIPTION("livepatch-lab: cmdline_proc_show replacement that oopses");
MODULE_LICENSE("GPL");
MODULE_INFO(livepatch, "Y");
