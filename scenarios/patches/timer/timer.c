// SPDX-License-Identifier: GPL-2.0
/*
 * livepatch-lab: a patch that leaves a timer armed when its module goes. It
 * replaces cmdline_proc_show() (/proc/cmdline reads "livepatch-lab: patched")
 * and, once patched (post_patch callback), starts a housekeeping timer that
 * re-arms itself every 250 ms. Its module exit forgets del_timer_sync(): after
 * rmmod the timer, which lives in the freed module and runs its freed code,
 * fires within a quarter second and the kernel faults in softirq context at
 * an address that used to be this module's. While loaded, nothing is wrong.
 */
#define pr_fmt(fmt) KBUILD_MODNAME ": " fmt

#include <linux/kernel.h>
#include <linux/module.h>
#include <linux/version.h>
#include <linux/livepatch.h>
#include <linux/seq_file.h>
#include <linux/timer.h>
#include <linux/jiffies.h>

#if LINUX_VERSION_CODE < KERNEL_VERSION(5, 1, 0)
#error "livepatch-lab patches use klp_enable_patch() (Linux 5.1 and later)"
#endif

static struct timer_list lab_timer_housekeeping;
static unsigned long lab_timer_ticks;

static void lab_timer_tick(struct timer_list *t)
{
	lab_timer_ticks++;
	mod_timer(t, jiffies + msecs_to_jiffies(250));
}

static int lab_timer_cmdline_show(struct seq_file *m, void *v)
{
	seq_puts(m, "livepatch-lab: patched\n");
	return 0;
}

static void lab_timer_post_patch(struct klp_object *obj)
{
	timer_setup(&lab_timer_housekeeping, lab_timer_tick, 0);
	mod_timer(&lab_timer_housekeeping, jiffies + msecs_to_jiffies(250));
}

static struct klp_func lab_timer_funcs[] = {
	{
		.old_name = "cmdline_proc_show",
		.new_func = lab_timer_cmdline_show,
	},
	{ }
};

static struct klp_object lab_timer_objs[] = {
	{
		.name = NULL,			/* vmlinux */
		.funcs = lab_timer_funcs,
		.callbacks = {
			.post_patch = lab_timer_post_patch,
		},
	},
	{ }
};

static struct klp_patch lab_timer_patch = {
	.mod = THIS_MODULE,
	.objs = lab_timer_objs,
};

static int __init lab_timer_init(void)
{
	return klp_enable_patch(&lab_timer_patch);
}

static void __exit lab_timer_exit(void)
{
	/* the bug: the timer is still armed (no del_timer_sync) */
}

module_init(lab_timer_init);
module_exit(lab_timer_exit);
MODULE_DESCRIPTION("livepatch-lab: a patch that leaves a timer armed after unload");
MODULE_LICENSE("GPL");
MODULE_INFO(livepatch, "Y");
