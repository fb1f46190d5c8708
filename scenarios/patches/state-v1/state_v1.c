// SPDX-License-Identifier: GPL-2.0
/*
 * livepatch-lab: first patch of a cumulative series that changes a system
 * state (Documentation/livepatch/system-state.rst). It declares the state
 * LAB_STATE_ID at version 1 and owns it: its pre_patch callback sets it up
 * (a kmalloc'ed record standing for whatever the fix changes in the system)
 * and prints "lab_state_v1: state set up (version 1)"; post_patch prints
 * "lab_state_v1: state in use (version 1)"; post_unpatch frees it and
 * prints "lab_state_v1: state released (version 1)". Replaces
 * cmdline_proc_show(): /proc/cmdline reads "lab-state: v1".
 *
 * The kernel keeps later patches compatible with it: a replacing patch that
 * lacks LAB_STATE_ID (state-v2-nostate) is refused with "livepatch: Livepatch
 * patch (<name>) is not compatible with the already installed livepatches."
 * and this patch stays active; one that carries it (state-v2) takes the
 * state over in its own callbacks, and this patch's callbacks do not run.
 */
#define pr_fmt(fmt) KBUILD_MODNAME ": " fmt

#include <linux/kernel.h>
#include <linux/module.h>
#include <linux/version.h>
#include <linux/jiffies.h>
#include <linux/livepatch.h>
#include <linux/seq_file.h>
#include <linux/slab.h>

#if LINUX_VERSION_CODE < KERNEL_VERSION(5, 5, 0)
#error "livepatch-lab state patches use klp_state (Linux 5.5 and later)"
#endif

/* The state's id and its data's layout are shared by every state-* patch. */
#define LAB_STATE_ID		0x1ab5a7eUL
#define LAB_STATE_VERSION	1

struct lab_state_data {
	unsigned int version;		/* of the patch that set it up or last took it over */
	unsigned long since;		/* jiffies at set-up */
};

static struct klp_patch lab_state_v1_patch;

static struct klp_state *lab_state_v1_state(void)
{
	return klp_get_state(&lab_state_v1_patch, LAB_STATE_ID);
}

/* The first patch of the series: there is no earlier state to take over. */
static int lab_state_v1_pre_patch(struct klp_object *obj)
{
	struct klp_state *state = lab_state_v1_state();
	struct lab_state_data *data = kzalloc(sizeof(*data), GFP_KERNEL);

	if (!data)
		return -ENOMEM;
	data->version = state->version;
	data->since = jiffies;
	state->data = data;
	pr_info("state set up (version %u)\n", state->version);
	return 0;
}

static void lab_state_v1_post_patch(struct klp_object *obj)
{
	pr_info("state in use (version %u)\n", lab_state_v1_state()->version);
}

/*
 * Runs when lab_state_v1 itself is disabled (or its patching transition is
 * reversed), not when a cumulative patch replaces it: that one owns the data
 * by then.
 */
static void lab_state_v1_post_unpatch(struct klp_object *obj)
{
	struct klp_state *state = lab_state_v1_state();
	struct lab_state_data *data = state->data;

	if (!data)
		return;
	state->data = NULL;
	pr_info("state released (version %u)\n", data->version);
	kfree(data);
}

static int lab_state_v1_cmdline_show(struct seq_file *m, void *v)
{
	seq_puts(m, "lab-state: v1\n");
	return 0;
}

static struct klp_func lab_state_v1_funcs[] = {
	{
		.old_name = "cmdline_proc_show",
		.new_func = lab_state_v1_cmdline_show,
	},
	{ }
};

static struct klp_object lab_state_v1_objs[] = {
	{
		.name = NULL,			/* vmlinux */
		.funcs = lab_state_v1_funcs,
		.callbacks = {
			.pre_patch = lab_state_v1_pre_patch,
			.post_patch = lab_state_v1_post_patch,
			.post_unpatch = lab_state_v1_post_unpatch,
		},
	},
	{ }
};

static struct klp_state lab_state_v1_states[] = {
	{
		.id = LAB_STATE_ID,
		.version = LAB_STATE_VERSION,
	},
	{ }
};

static struct klp_patch lab_state_v1_patch = {
	.mod = THIS_MODULE,
	.objs = lab_state_v1_objs,
	.states = lab_state_v1_states,
	.replace = true,		/* a cumulative series */
};

static int __init lab_state_v1_init(void)
{
	return klp_enable_patch(&lab_state_v1_patch);
}

static void __exit lab_state_v1_exit(void)
{
}

module_init(lab_state_v1_init);
module_exit(lab_state_v1_exit);
MODULE_DESCRIPTION("livepatch-lab: cumulative patch v1 that sets up a klp_state (version 1)");
MODULE_LICENSE("GPL");
MODULE_INFO(livepatch, "Y");
