// SPDX-License-Identifier: GPL-2.0
/*
 * livepatch-lab: a correct patch that costs every call a known amount. It
 * replaces cmdline_proc_show() (/proc/cmdline reads "livepatch-lab: patched")
 * and busy-waits delay_us microseconds (default 1000) on every call: what a
 * fix that takes a lock, walks a list or validates a buffer on a hot path
 * costs. Nothing is wrong but the time; the lab's cost workload must report
 * about delay_us more per call, with an interval that contains it.
 */
#define pr_fmt(fmt) KBUILD_MODNAME ": " fmt

#include <linux/kernel.h>
#include <linux/module.h>
#include <linux/version.h>
#include <linux/livepatch.h>
#include <linux/seq_file.h>
#include <linux/ktime.h>
#include <linux/processor.h>

#if LINUX_VERSION_CODE < KERNEL_VERSION(5, 1, 0)
#error "livepatch-lab patches use klp_enable_patch() (Linux 5.1 and later)"
#endif

static unsigned int delay_us = 1000;
module_param(delay_us, uint, 0444);
MODULE_PARM_DESC(delay_us, "microseconds busy-waited on every call (default 1000)");

static int lab_busy_cmdline_show(struct seq_file *m, void *v)
{
	/*
	 * On the clock, not udelay(): udelay() counts loops calibrated at boot, and an emulated
	 * CPU (TCG) runs them at whatever speed the host gives it, so its cost would not be known.
	 */
	u64 end = ktime_get_ns() + (u64)delay_us * NSEC_PER_USEC;

	while (ktime_get_ns() < end)
		cpu_relax();
	seq_puts(m, "livepatch-lab: patched\n");
	return 0;
}

static struct klp_func lab_busy_funcs[] = {
	{
		.old_name = "cmdline_proc_show",
		.new_func = lab_busy_cmdline_show,
	},
	{ }
};

static struct klp_object lab_busy_objs[] = {
	{
		.name = NULL,			/* vmlinux */
		.funcs = lab_busy_funcs,
	},
	{ }
};

static struct klp_patch lab_busy_patch = {
	.mod = THIS_MODULE,
	.objs = lab_busy_objs,
};

static int __init lab_busy_init(void)
{
	return klp_enable_patch(&lab_busy_patch);
}

static void __exit lab_busy_exit(void)
{
}

module_init(lab_busy_init);
module_exit(lab_busy_exit);
MODULE_DESCRIPTION("livepatch-lab: a patch that busy-waits on every call (a known cost)");
MODULE_LICENSE("GPL");
MODULE_INFO(livepatch, "Y");
