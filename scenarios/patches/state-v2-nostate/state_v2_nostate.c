// SPDX-License-Identifier: GPL-2.0
/*
 * livepatch-lab: a second patch of the cumulative series of state-v1 that
 * forgot the system state. It replaces (.replace) but declares no klp_state,
 * so it cannot take over LAB_STATE_ID that lab_state_v1 set up. With
 * lab_state_v1 installed the kernel refuses it before patching anything:
 * insmod fails with EINVAL, the kernel prints "livepatch: Livepatch patch
 * (lab_state_v2_nostate) is not compatible with the already installed
 * livepatches." and lab_state_v1 stays active (/proc/cmdline still reads
 * "lab-state: v1"). Loaded on a kernel with no state-carrying patch it is
 * accepted and /proc/cmdline reads "lab-state: v2 nostate".
 */
#define pr_fmt(fmt) KBUILD_MODNAME ": " fmt

#include <linux/kernel.h>
#include <linux/module.h>
#include <linux/version.h>
#include <linux/livepatch.h>
#include <linux/seq_file.h>

#if LINUX_VERSION_CODE < KERNEL_VERSION(5, 5, 0)
#error "livepatch-lab state patches use klp_state (Linux 5.5 and later)"
#endif

static int lab_state_v2_nostate_cmdline_show(struct seq_file *m, void *v)
{
	seq_puts(m, "lab-state: v2 nostate\n");
	return 0;
}

static struct klp_func lab_state_v2_nostate_funcs[] = {
	{
		.old_name = "cmdline_proc_show",
		.new_func = lab_state_v2_nostate_cmdline_show,
	},
	{ }
};

static struct klp_object lab_state_v2_nostate_objs[] = {
	{
		.name = NULL,			/* vmlinux */
		.funcs = lab_state_v2_nostate_funcs,
	},
	{ }
};

/* no .states: the flaw the kernel must catch */
static struct klp_patch lab_state_v2_nostate_patch = {
	.mod = THIS_MODULE,
	.objs = lab_state_v2_nostate_objs,
	.replace = true,
};

static int __init lab_state_v2_nostate_init(void)
{
	return klp_enable_patch(&lab_state_v2_nostate_patch);
}

static void __exit lab_state_v2_nostate_exit(void)
{
}

module_init(lab_state_v2_nostate_init);
module_exit(lab_state_v2_nostate_exit);
MODULE_DESCRIPTION("livepatch-lab: cumulative patch v2 that lacks v1's klp_state (refused)");
MODULE_LICENSE("GPL");
MODULE_INFO(livepatch, "Y");
