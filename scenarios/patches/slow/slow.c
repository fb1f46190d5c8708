// SPDX-License-Identifier: GPL-2.0
/*
 * livepatch-lab: a correct but slow patch. The replacement of
 * cmdline_proc_show() sleeps 150 ms before printing "livepatch-lab: patched",
 * adding that latency to every request path that reads /proc/cmdline.
 * The lab must fail it (service latency).
 */
#define pr_fmt(fmt) KBUILD_MODNAME ": " fmt

#include <linux/kernel.h>
#include <linux/module.h>
#include <linux/version.h>
#include <linux/delay.h>
#include <linux/livepatch.h>
#include <linux/seq_file.h>

#if LINUX_VERSION_CODE < KERNEL_VERSION(5, 1, 0)
#error "livepatch-lab patches use klp_enable_patch() (Linux 5.1 and later)"
#endif

#define LAB_SLOW_DELAY_MS 150

static int lab_slow_cmdline_show(struct seq_file *m, void *v)
{
	msleep(LAB_SLOW_DELAY_MS);
	seq_puts(m, "livepatch-lab: patched\n");
	return 0;
}

static struct klp_func lab_slow_funcs[] = {
	{
		.old_name = "cmdline_proc_show",
		.new_func = lab_slow_cmdline_show,
	},
	{ }
};

static struct klp_object lab_slow_objs[] = {
	{
		.name = NULL,			/* vmlinux */
		.funcs = lab_slow_funcs,
	},
	{ }
};

static struct klp_patch lab_slow_patch = {
	.mod = THIS_MODULE,
	.objs = lab_slow_objs,
};

static int __init lab_slow_init(void)
{
	return klp_enable_patch(&lab_slow_patch);
}

static void __exit lab_slow_exit(void)
{
}

module_init(lab_slow_init);
module_exit(lab_slow_exit);
MODULE_DESCRIPTION("livepatch-lab: cmdline_proc_show replacement that sleeps 150 ms");
MODULE_LICENSE("GPL");
MODULE_INFO(livepatch, "Y");
