// SPDX-License-Identifier: GPL-2.0
/*
 * livepatch-lab: a patch that adds a field to live objects of another
 * module through shadow variables (Documentation/livepatch/shadow-vars.rst).
 * Its klp_object is the module lab_objects (scenarios/patches/objects); it
 * replaces three of its functions:
 *
 * - lab_objects_touch(): also counts the touch in a shadow counter attached
 *   to the object (klp_shadow_get_or_alloc(), allocated on first touch);
 * - lab_objects_describe(): /proc/lab_objects lines read
 *   "lab_objects: object <id> touched <n> times, shadow <k>" (k: touches
 *   seen while patched; "shadow none" before the first one);
 * - lab_objects_release(): frees the object's shadow with the object.
 *
 * A shadow found on a new object with another object's id was left at the
 * same address by an unpatched task (during a transition, the old release
 * does not free shadows): it is reset, never inherited. The post_unpatch
 * callback frees every remaining shadow (klp_shadow_free_all()) and prints
 * "lab_shadow: freed <N> shadow variables" and
 * "lab_shadow: shadow variables: <A> allocated, <F> freed"; A == F, else
 * "lab_shadow: leaked <A-F> shadow variables" (an error). The destructor
 * only counts: it never touches the object, which may be gone.
 */
#define pr_fmt(fmt) KBUILD_MODNAME ": " fmt

#include <linux/kernel.h>
#include <linux/module.h>
#include <linux/version.h>
#include <linux/atomic.h>
#include <linux/list.h>
#include <linux/livepatch.h>
#include <linux/seq_file.h>
#include <linux/slab.h>

#if LINUX_VERSION_CODE < KERNEL_VERSION(5, 1, 0)
#error "livepatch-lab patches use klp_enable_patch() (Linux 5.1 and later)"
#endif

#define LAB_SHADOW_ID	0x1ab5ad0UL		/* this patch's shadow variables */

/* lab_objects' layout (scenarios/patches/objects/objects.c): change both or neither */
struct lab_object {
	struct list_head node;
	unsigned int id;
	unsigned long touches;
};

struct lab_shadow_counter {
	unsigned int id;		/* the object it was attached to */
	unsigned long touches;
};

static atomic_t lab_shadow_allocated = ATOMIC_INIT(0);
static atomic_t lab_shadow_freed = ATOMIC_INIT(0);

/* Runs under the kernel's shadow lock (no sleeping): fills a new shadow. */
static int lab_shadow_ctor(void *obj, void *shadow_data, void *ctor_data)
{
	struct lab_shadow_counter *counter = shadow_data;

	counter->id = ((struct lab_object *)obj)->id;
	atomic_inc(&lab_shadow_allocated);
	return 0;
}

static void lab_shadow_dtor(void *obj, void *shadow_data)
{
	atomic_inc(&lab_shadow_freed);
}

static void lab_shadow_touch(struct lab_object *obj)
{
	struct lab_shadow_counter *counter;

	obj->touches++;
	counter = klp_shadow_get_or_alloc(obj, LAB_SHADOW_ID, sizeof(*counter), GFP_KERNEL,
					  lab_shadow_ctor, NULL);
	if (!counter)
		return;			/* out of memory: this touch goes uncounted */
	if (counter->id != obj->id) {	/* stale, from a freed object at this address */
		counter->id = obj->id;
		counter->touches = 0;
	}
	counter->touches++;
}

static void lab_shadow_release(struct lab_object *obj)
{
	klp_shadow_free(obj, LAB_SHADOW_ID, lab_shadow_dtor);
	list_del(&obj->node);
	kfree(obj);
}

static void lab_shadow_describe(struct seq_file *m, struct lab_object *obj)
{
	struct lab_shadow_counter *counter = klp_shadow_get(obj, LAB_SHADOW_ID);

	if (counter && counter->id == obj->id)
		seq_printf(m, "lab_objects: object %u touched %lu times, shadow %lu\n",
			   obj->id, obj->touches, counter->touches);
	else
		seq_printf(m, "lab_objects: object %u touched %lu times, shadow none\n",
			   obj->id, obj->touches);
}

static void lab_shadow_post_patch(struct klp_object *obj)
{
	pr_info("counting touches of %s objects in shadow variables\n", obj->name);
}

/* No task runs the patched functions any more: nothing can allocate again. */
static void lab_shadow_post_unpatch(struct klp_object *obj)
{
	int before = atomic_read(&lab_shadow_freed);
	int allocated, freed;

	klp_shadow_free_all(LAB_SHADOW_ID, lab_shadow_dtor);
	allocated = atomic_read(&lab_shadow_allocated);
	freed = atomic_read(&lab_shadow_freed);
	pr_info("freed %d shadow variables\n", freed - before);
	pr_info("shadow variables: %d allocated, %d freed\n", allocated, freed);
	if (allocated != freed)
		pr_err("leaked %d shadow variables\n", allocated - freed);
}

static struct klp_func lab_shadow_funcs[] = {
	{
		.old_name = "lab_objects_touch",
		.new_func = lab_shadow_touch,
	},
	{
		.old_name = "lab_objects_release",
		.new_func = lab_shadow_release,
	},
	{
		.old_name = "lab_objects_describe",
		.new_func = lab_shadow_describe,
	},
	{ }
};

static struct klp_object lab_shadow_objs[] = {
	{
		.name = "lab_objects",		/* the target module */
		.funcs = lab_shadow_funcs,
		.callbacks = {
			.post_patch = lab_shadow_post_patch,
			.post_unpatch = lab_shadow_post_unpatch,
		},
	},
	{ }
};

static struct klp_patch lab_shadow_patch = {
	.mod = THIS_MODULE,
	.objs = lab_shadow_objs,
};

static int __init lab_shadow_init(void)
{
	return klp_enable_patch(&lab_shadow_patch);
}

static void __exit lab_shadow_exit(void)
{
}

module_init(lab_shadow_init);
module_exit(lab_shadow_exit);
MODULE_DESCRIPTION("livepatch-lab: shadow-variable patch of lab_objects (per-object touch counters)");
MODULE_LICENSE("GPL");
MODULE_INFO(livepatch, "Y");
