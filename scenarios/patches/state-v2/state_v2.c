// SPDX-License-Identifier: GPL-2.0
/*
 * livepatch-lab: second patch of the cumulative series of state-v1. It
 * carries the same system state LAB_STATE_ID at version 2 (a compatible
 * upgrade: the kernel accepts a state at the same or a higher version) and
 * takes it over (Documentation/livepatch/system-state.rst): its pre_patch
 * finds the state of the installed patch with klp_get_prev_state() and
 * prints "lab_state_v2: state found (version 1), taking it over"; once the
 * transition completes, post_patch moves the data to its own klp_state and
 * prints "lab_state_v2: state taken over (version 1 -> 2)". lab_state_v1 is
 * replaced without running its callbacks, so nothing is freed twice; the
 * state lives on until lab_state_v2 is disabled ("lab_state_v2: state
 * released (version 2)"). Loaded alone, it sets the state up itself
 * ("state set up (version 2)"). Replaces cmdline_proc_show(): /proc/cmdline
 * reads "lab-state: v2". Once it is installed, lab_state_v1 (version 1 < 2)
 * is refused as not compatible.
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
#define LAB_STATE_VERSION	2

struct lab_state_data {
	unsigned int version;		/* of the patch that set it up or last took it over */
	unsigned long since;		/* jiffies at set-up */
};

static struct klp_patch lab_state_v2_patch;

static struct klp_state *lab_state_v2_state(void)
{
	return klp_get_state(&lab_state_v2_patch, LAB_STATE_ID);
}

/*
 * An installed patch's state (klp_get_prev_state(), valid in callbacks) is
 * only looked at here; the data changes hands in post_patch, once nothing
 * can reverse the transition any more.
 */
static int lab_state_v2_pre_patch(struct klp_object *obj)
{
	struct klp_state *prev = klp_get_prev_state(LAB_STATE_ID);
	struct klp_state *state = lab_state_v2_state();
	struct lab_state_data *data;

	if (prev && prev->data) {
		pr_info("state found (version %u), taking it over\n", prev->version);
		return 0;
	}
	data = kzalloc(sizeof(*data), GFP_KERNEL);
	if (!data)
		return -ENOMEM;
	data->version = state->version;
	data->since = jiffies;
	state->data = data;
	pr_info("state set up (version %u)\n", state->version);
	return 0;
}

static void lab_state_v2_post_patch(struct klp_object *obj)
{
	struct klp_state *prev = klp_get_prev_state(LAB_STATE_ID);
	struct klp_state *state = lab_state_v2_state();
	struct lab_state_data *data;

	if (prev && prev->data) {
		data = prev->data;
		prev->data = NULL;
		pr_info("state taken over (version %u -> %u)\n", data->version, state->version);
		data->version = state->version;
		state->data = data;
		return;
	}
	pr_info("state in use (version %u)\n", state->version);
}

/* Also runs after a reversed patching transition: frees only what it owns. */
static void lab_state_v2_post_unpatch(struct klp_object *obj)
{
	struct klp_state *state = lab_state_v2_state();
	struct lab_state_data *data = state->data;

	if (!data)
		return;
	state->data = NULL;
	pr_info("state released (version %u)\n", data->version);
	kfree(data);
}

static int lab_state_v2_cmdline_show(struct seq_file *m, void *v)
{
	seq_puts(m, "lab-state: v2\n");
	return 0;
}

static struct klp_func lab_state_v2_funcs[] = {
	{
		.old_name = "cmdline_proc_show",
		.new_func = lab_state_v2_cmdline_show,
	},
	{ }
};

static struct klp_object lab_state_v2_objs[] = {
	{
		.name = NULL,			/* vmlinux */
		.funcs = lab_state_v2_funcs,
		.callbacks = {
			.pre_patch = lab_state_v2_pre_patch,
			.post_patch = lab_state_v2_post_patch,
			.post_unpatch = lab_state_v2_post_unpatch,
		},
	},
	{ }
};

static struct klp_state lab_state_v2_states[] = {
	{
		.id = LAB_STATE_ID,
		.version = LAB_STATE_VERSION,
	},
	{ }
};

static struct klp_patch lab_state_v2_patch = {
	.mod = THIS_MODULE,
	.objs = lab_state_v2_objs,
	.states = lab_state_v2_states,
	.replace = true,		/* a cumulative series */
};

static int __init lab_state_v2_init(void)
{
	return klp_enable_patch(&lab_state_v2_patch);
}

static void __exit lab_state_v2_exit(void)
{
}

module_init(lab_state_v2_init);
module_exit(lab_state_v2_exit);
MODULE_DESCRIPTION("livepatch-lab: cumulative patch v2 that takes over the klp_state of v1 (version 2)");
MODULE_LICENSE("GPL");
MODULE_INFO(livepatch, "Y");
