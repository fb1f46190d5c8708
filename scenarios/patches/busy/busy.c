// SPDX-License-Identifier: GPL-2.0
/*
 * livepatch-lab: a correct patch that costs every call a known amount. It
 * replaces cmdline_proc_show() (/proc/cmdline reads "livepatch-lab: patched")
 * and busy-waits delay_us microseconds (default 1000) on every call: what a
 * fix that takes a lock, walks a list or validates a buffer on a hot path
 * costs. Nothing is wrong but the time; the lab's cost workload must report
 * about delay_us more per call, with an interval that contains it.
 *
 * With mimic=1 it writes what the old function wrote, byte for byte (read from /proc/cmdline
 * at init, before the patch is enabled): then the caller's work is the same patched or not, and
 * delay_us=0 leaves nothing but the livepatch redirection. Without it, the shorter line alone
 * makes a caller that parses it (bash's read) about 0.02 ms a call faster under TCG.
 *
 * The patch also times itself: every call's time inside the new function, entry to return,
 * and the part of it spent busy-waiting, summed, and at unload one line "N calls, T ns in the
 * patched function, B ns of it busy-waiting". B/N is the work a call adds beyond what the old
 * function did (with mimic the rest is the same work): the cost's ground truth beside the lab's
 * own figure (bench/overhead.py reads it from dmesg.txt). A busy-wait overruns its nominal
 * delay_us by up to a loop's turn, and under TCG by what a clock read costs.
 */
#define pr_fmt(fmt) KBUILD_MODNAME ": " fmt

#include <linux/kernel.h>
#include <linux/module.h>
#include <linux/version.h>
#include <linux/livepatch.h>
#include <linux/seq_file.h>
#include <linux/ktime.h>
#include <linux/processor.h>
#include <linux/atomic.h>
#include <linux/fs.h>
#include <linux/err.h>

#if LINUX_VERSION_CODE < KERNEL_VERSION(5, 1, 0)
#error "livepatch-lab patches use klp_enable_patch() (Linux 5.1 and later)"
#endif

static unsigned int delay_us = 1000;
module_param(delay_us, uint, 0444);
MODULE_PARM_DESC(delay_us, "microseconds busy-waited on every call (default 1000)");

static bool mimic;
module_param(mimic, bool, 0444);
MODULE_PARM_DESC(mimic, "write the unpatched /proc/cmdline, not \"livepatch-lab: patched\"");

static char lab_busy_line[4096];	/* the unpatched output, with mimic */
static size_t lab_busy_len;

static atomic64_t lab_busy_calls = ATOMIC64_INIT(0);
static atomic64_t lab_busy_ns = ATOMIC64_INIT(0);
static atomic64_t lab_busy_wait_ns = ATOMIC64_INIT(0);

static int lab_busy_cmdline_show(struct seq_file *m, void *v)
{
	/*
	 * On the clock, not udelay(): udelay() counts loops calibrated at boot, and an emulated
	 * CPU (TCG) runs them at whatever speed the host gives it, so its cost would not be known.
	 */
	u64 start = ktime_get_ns();
	u64 end = start + (u64)delay_us * NSEC_PER_USEC;
	u64 now;

	while ((now = ktime_get_ns()) < end)
		cpu_relax();
	atomic64_add(now - start, &lab_busy_wait_ns);
	if (mimic)
		seq_write(m, lab_busy_line, lab_busy_len);
	else
		seq_puts(m, "livepatch-lab: patched\n");
	atomic64_inc(&lab_busy_calls);
	atomic64_add(ktime_get_ns() - start, &lab_busy_ns);
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

/* What /proc/cmdline reads now, while the old function still serves it. */
static int lab_busy_read_unpatched(void)
{
	struct file *f = filp_open("/proc/cmdline", O_RDONLY, 0);
	loff_t pos = 0;
	ssize_t n;

	if (IS_ERR(f))
		return PTR_ERR(f);
	n = kernel_read(f, lab_busy_line, sizeof(lab_busy_line), &pos);
	filp_close(f, NULL);
	if (n < 0)
		return n;
	if (n == sizeof(lab_busy_line))
		return -E2BIG;
	lab_busy_len = n;
	return 0;
}

static int __init lab_busy_init(void)
{
	int ret = mimic ? lab_busy_read_unpatched() : 0;

	if (ret) {
		pr_err("cannot read the unpatched /proc/cmdline: %d\n", ret);
		return ret;
	}
	return klp_enable_patch(&lab_busy_patch);
}

static void __exit lab_busy_exit(void)
{
	pr_info("%lld calls, %lld ns in the patched function, %lld ns of it busy-waiting\n",
		(long long)atomic64_read(&lab_busy_calls), (long long)atomic64_read(&lab_busy_ns),
		(long long)atomic64_read(&lab_busy_wait_ns));
}

module_init(lab_busy_init);
module_exit(lab_busy_exit);
MODULE_DESCRIPTION("livepatch-lab: a patch that busy-waits on every call (a known cost)");
MODULE_LICENSE("GPL");
MODULE_INFO(livepatch, "Y");
