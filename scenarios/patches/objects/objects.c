// SPDX-License-Identifier: GPL-2.0
/*
 * livepatch-lab: the target module of the shadow patch (not a livepatch).
 * It keeps a few live objects, each with an id (never reused) and a touch
 * count, on a list under a mutex:
 *
 * - a delayed work runs every LAB_OBJECTS_PERIOD and calls
 *   lab_objects_touch() on every object; every LAB_OBJECTS_RENEW rounds it
 *   releases the oldest object (lab_objects_release()) and creates a new
 *   one, so objects come and go while a patch is active;
 * - /proc/lab_objects prints a header line, then one line per object from
 *   lab_objects_describe(): "lab_objects: object <id> touched <n> times".
 *
 * lab_objects_touch(), lab_objects_release() and lab_objects_describe() are
 * what the shadow patch replaces; the shadow patch relies on struct
 * lab_object's layout. Unloading stops the work and releases every object
 * through lab_objects_release().
 */
#define pr_fmt(fmt) KBUILD_MODNAME ": " fmt

#include <linux/kernel.h>
#include <linux/module.h>
#include <linux/jiffies.h>
#include <linux/list.h>
#include <linux/mutex.h>
#include <linux/proc_fs.h>
#include <linux/seq_file.h>
#include <linux/slab.h>
#include <linux/workqueue.h>

#define LAB_OBJECTS_COUNT	8
#define LAB_OBJECTS_PERIOD	(HZ / 10)
#define LAB_OBJECTS_RENEW	10		/* rounds between two renewals */

/* The shadow patch repeats this layout: change both or neither. */
struct lab_object {
	struct list_head node;
	unsigned int id;
	unsigned long touches;
};

/* global and noinline so that each stays one patchable symbol in kallsyms */
void lab_objects_touch(struct lab_object *obj);
void lab_objects_release(struct lab_object *obj);
void lab_objects_describe(struct seq_file *m, struct lab_object *obj);

static LIST_HEAD(lab_objects);
static DEFINE_MUTEX(lab_objects_lock);		/* the list and every object on it */
static unsigned int lab_objects_next_id;
static unsigned long lab_objects_rounds;
static struct delayed_work lab_objects_work;
static struct proc_dir_entry *lab_objects_proc;

noinline void lab_objects_touch(struct lab_object *obj)
{
	obj->touches++;
}

/* Called with lab_objects_lock held; the object leaves the list and is freed. */
noinline void lab_objects_release(struct lab_object *obj)
{
	list_del(&obj->node);
	kfree(obj);
}

noinline void lab_objects_describe(struct seq_file *m, struct lab_object *obj)
{
	seq_printf(m, "lab_objects: object %u touched %lu times\n", obj->id, obj->touches);
}

/* Called with lab_objects_lock held. */
static int lab_objects_create(void)
{
	struct lab_object *obj = kzalloc(sizeof(*obj), GFP_KERNEL);

	if (!obj)
		return -ENOMEM;
	obj->id = lab_objects_next_id++;
	list_add_tail(&obj->node, &lab_objects);
	return 0;
}

static void lab_objects_tick(struct work_struct *work)
{
	struct lab_object *obj;

	mutex_lock(&lab_objects_lock);
	list_for_each_entry(obj, &lab_objects, node)
		lab_objects_touch(obj);
	if (++lab_objects_rounds % LAB_OBJECTS_RENEW == 0) {
		obj = list_first_entry_or_null(&lab_objects, struct lab_object, node);
		if (obj)
			lab_objects_release(obj);
		/* on -ENOMEM the list is one shorter until the next renewal */
		lab_objects_create();
	}
	mutex_unlock(&lab_objects_lock);
	schedule_delayed_work(&lab_objects_work, LAB_OBJECTS_PERIOD);
}

static int lab_objects_show(struct seq_file *m, void *v)
{
	struct lab_object *obj;
	unsigned int count = 0;

	mutex_lock(&lab_objects_lock);
	list_for_each_entry(obj, &lab_objects, node)
		count++;
	seq_printf(m, "lab_objects: %u objects after %lu rounds\n", count, lab_objects_rounds);
	list_for_each_entry(obj, &lab_objects, node)
		lab_objects_describe(m, obj);
	mutex_unlock(&lab_objects_lock);
	return 0;
}

static void lab_objects_release_all(void)
{
	struct lab_object *obj, *tmp;

	mutex_lock(&lab_objects_lock);
	list_for_each_entry_safe(obj, tmp, &lab_objects, node)
		lab_objects_release(obj);
	mutex_unlock(&lab_objects_lock);
}

static int __init lab_objects_init(void)
{
	int i, ret = 0;

	mutex_lock(&lab_objects_lock);
	for (i = 0; i < LAB_OBJECTS_COUNT && !ret; i++)
		ret = lab_objects_create();
	mutex_unlock(&lab_objects_lock);
	if (ret)
		goto fail;

	lab_objects_proc = proc_create_single("lab_objects", 0444, NULL, lab_objects_show);
	if (!lab_objects_proc) {
		ret = -ENOMEM;
		goto fail;
	}
	INIT_DELAYED_WORK(&lab_objects_work, lab_objects_tick);
	schedule_delayed_work(&lab_objects_work, LAB_OBJECTS_PERIOD);
	pr_info("%d objects, touched every %d ms\n", LAB_OBJECTS_COUNT,
		jiffies_to_msecs(LAB_OBJECTS_PERIOD));
	return 0;
fail:
	lab_objects_release_all();
	return ret;
}

static void __exit lab_objects_exit(void)
{
	/* the work re-arms itself: the _sync variant stops that too */
	cancel_delayed_work_sync(&lab_objects_work);
	proc_remove(lab_objects_proc);
	lab_objects_release_all();
}

module_init(lab_objects_init);
module_exit(lab_objects_exit);
MODULE_DESCRIPTION("livepatch-lab: target module with live objects for the shadow-variable patch");
MODULE_LICENSE("GPL");
