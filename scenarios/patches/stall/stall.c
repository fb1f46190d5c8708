// SPDX-License-Identifier: GPL-2.0
/*
 * livepatch-lab: a patch whose transition can never complete. It patches the
 * lab_target module (scenarios/patches/target): lab_target_sleep(), which the
 * kthread lab_sleeper never leaves, and lab_target_show() (/proc/lab_target
 * reads "lab_target: patched" for tasks already switched). lab_sleeper stays
 * in the old lab_target_sleep() forever, so /sys/kernel/livepatch/lab_stall/
 * transition stays 1 until the lab reverses (or forces) it. Signalling does
 * not help: a woken lab_sleeper just sleeps again in the same function.
 * The lab must fail it (transition), naming lab_sleeper and its stack.
 */
#define pr_fmt(fmt) KBUILD_MODNAME ": " fmt

#include <linux/kernel.h>
#include <linux/module.h>
#include <linux/version.h>
#include <linux/kthread.h>
#include <linux/livepatch.h>
#include <linux/sched.h>
#include <linux/seq_file.h>

#if LINUX_VERSION_CODE < KERNEL_VERSION(5, 1, 0)
#error "livepatch-lab patches use klp_enable_patch() (Linux 5.1 and later)"
#endif

/* The replacement of lab_target_sleep(): same behaviour, never reached in practice. */
static int lab_stall_target_sleep(void)
{
	for (;;) {
		set_current_state(TASK_INTERRUPTIBLE);
		if (kthread_should_stop())
			break;
		schedule_timeout(HZ / 2);
	}
	__set_current_state(TASK_RUNNING);
	return 0;
}

static int lab_stall_target_show(struct seq_file *m, void *v)
{
	seq_puts(m, "lab_target: patched\n");
	return 0;
}

static struct klp_func lab_stall_funcs[] = {
	{
		.old_name = "lab_target_sleep",
		.new_func = lab_stall_target_sleep,
	},
	{
		.old_name = "lab_target_show",
		.new_func = lab_stall_target_show,
	},
	{ }
};

static struct klp_object lab_stall_objs[] = {
	{
		.name = "lab_target",		/* the target module, not vmlinux */
		.funcs = lab_stall_funcs,
	},
	{ }
};

static struct klp_patch lab_stall_patch = {
	.mod = THIS_MODULE,
	.objs = lab_stall_objs,
};

static int __init lab_stall_init(void)
{
	return klp_enable_patch(&lab_stall_patch);
}

static void __exit lab_stall_exit(void)
{
}

module_init(lab_stall_init);
module_exit(lab_stall_exit);
MODULE_DESCRIPTION("livepatch-lab: patch of lab_target whose transition never completes");
MODULE_LICENSE("GPL");
MODULE_INFO(livepatch, "Y");
