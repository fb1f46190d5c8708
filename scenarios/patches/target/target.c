// SPDX-License-Identifier: GPL-2.0
/*
 * livepatch-lab: the target module of the "stall" patch (not a livepatch).
 *
 * - A kthread "lab_sleeper" spends its whole life inside lab_target_sleep(),
 *   which sleeps in a loop until the module is unloaded. A livepatch of
 *   lab_target_sleep() can therefore never switch that task: its transition
 *   stalls until it is reversed (or forced).
 * - /proc/lab_target reads "lab_target: original", printed by
 *   lab_target_show() (the other function the stall patch replaces).
 *
 * Unloading stops the thread (kthread_stop wakes it; it leaves the loop).
 */
#define pr_fmt(fmt) KBUILD_MODNAME ": " fmt

#include <linux/kernel.h>
#include <linux/module.h>
#include <linux/err.h>
#include <linux/kthread.h>
#include <linux/proc_fs.h>
#include <linux/sched.h>
#include <linux/seq_file.h>

#define LAB_TARGET_NAP (HZ / 2)

/* exported: declared here, as a header would, for -Wmissing-prototypes */
int lab_target_sleep(void);
int lab_target_show(struct seq_file *m, void *v);

static struct task_struct *lab_sleeper;
static struct proc_dir_entry *lab_proc;

/* Never returns before kthread_stop(): the caller's stack always holds it. */
noinline int lab_target_sleep(void)
{
	unsigned long naps = 0;

	for (;;) {
		set_current_state(TASK_INTERRUPTIBLE);
		if (kthread_should_stop())
			break;
		schedule_timeout(LAB_TARGET_NAP);
		naps++;
	}
	__set_current_state(TASK_RUNNING);
	pr_info("lab_sleeper leaves lab_target_sleep after %lu naps\n", naps);
	return 0;
}
EXPORT_SYMBOL_GPL(lab_target_sleep);

noinline int lab_target_show(struct seq_file *m, void *v)
{
	seq_puts(m, "lab_target: original\n");
	return 0;
}
EXPORT_SYMBOL_GPL(lab_target_show);

static int lab_sleeper_main(void *unused)
{
	return lab_target_sleep();
}

static int __init lab_target_init(void)
{
	lab_proc = proc_create_single("lab_target", 0444, NULL, lab_target_show);
	if (!lab_proc)
		return -ENOMEM;

	lab_sleeper = kthread_run(lab_sleeper_main, NULL, "lab_sleeper");
	if (IS_ERR(lab_sleeper)) {
		int ret = PTR_ERR(lab_sleeper);

		proc_remove(lab_proc);
		return ret;
	}
	pr_info("lab_sleeper (pid %d) sleeps in lab_target_sleep\n", task_pid_nr(lab_sleeper));
	return 0;
}

static void __exit lab_target_exit(void)
{
	kthread_stop(lab_sleeper);
	proc_remove(lab_proc);
}

module_init(lab_target_init);
module_exit(lab_target_exit);
MODULE_DESCRIPTION("livepatch-lab: target module with a kthread that never leaves lab_target_sleep");
MODULE_LICENSE("GPL");
