// SPDX-License-Identifier: GPL-2.0
/*
 * livepatch-lab: a patch that cannot be unloaded. Patches cmdline_proc_show()
 * like the good patch, but its init takes a reference on its own module and
 * never drops it: disabling works, the unpatch transition completes, yet
 * rmmod fails ("Module lab_pinned is in use") for the rest of the boot.
 * The lab must fail it (revert).
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

static int lab_pinned_cmdline_show(struct seq_file *m, void *v)
{
	seq_puts(m, "livepatch-lab: patched\n");
	return 0;
}

static struct klp_func lab_pinned_funcs[] = {
	{
		.old_name = "cmdline_proc_show",
		.new_func = lab_pinned_cmdline_show,
	},
	{ }
};

static struct klp_object lab_pinned_objs[] = {
	{
		.name = NULL,			/* vmlinux */
		.funcs = lab_pinned_funcs,
	},
	{ }
};

static struct klp_patch lab_pinned_patch = {
	.mod = THIS_MODULE,
	.objs = lab_pinned_objs,
};

static int __init lab_pinned_init(void)
{
	int ret;

	/* the deliberate leak: one reference nobody will ever put */
	__module_get(THIS_MODULE);
	ret = klp_enable_patch(&lab_pinned_patch);
	if (ret) {
		module_put(THIS_MODULE);	/* a failed load must not leak it */
		return ret;
	}
	pr_info("holding an extra reference on itself: rmmod will fail\n");
	return 0;
}

static void __exit lab_pinned_exit(void)
{
}

module_init(lab_pinned_init);
module_exit(lab_pinned_exit);
MODULE_DESCRIPTION("livepatch-lab: cmdline_proc_show patch that pins itself in memory");
MODULE_LICENSE("GPL");
MODULE_INFO(livepatch, "Y");
