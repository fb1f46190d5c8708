// SPDX-License-Identifier: GPL-2.0
/*
 * livepatch-lab: a patch whose new function writes past the end of a slab
 * object. It replaces cmdline_proc_show() (/proc/cmdline reads
 * "livepatch-lab: patched"), and on every call takes a 64-byte object from a
 * cache of its own, fills it, and writes 8 bytes beyond its end before
 * freeing it: the off-by-a-word that a distribution kernel never notices (the
 * bytes land in the next object, or in padding). With SLUB's red zones on
 * (slub_debug=Z), the kernel reports "BUG lab_overflow (...): Right Redzone
 * overwritten" at the free, on every line.
 */
#define pr_fmt(fmt) KBUILD_MODNAME ": " fmt

#include <linux/kernel.h>
#include <linux/module.h>
#include <linux/version.h>
#include <linux/livepatch.h>
#include <linux/seq_file.h>
#include <linux/slab.h>

#if LINUX_VERSION_CODE < KERNEL_VERSION(5, 1, 0)
#error "livepatch-lab patches use klp_enable_patch() (Linux 5.1 and later)"
#endif

#define LAB_OBJECT_SIZE 64

static struct kmem_cache *lab_overflow_cache;

static int lab_overflow_cmdline_show(struct seq_file *m, void *v)
{
	unsigned char *obj = kmem_cache_alloc(lab_overflow_cache, GFP_KERNEL);
	size_t i, end = LAB_OBJECT_SIZE + sizeof(long);

	if (obj) {
		OPTIMIZER_HIDE_VAR(end);	/* the compiler must not see the overflow coming */
		for (i = 0; i < end; i++)	/* the bug: one word past the object */
			obj[i] = 0x78;
		kmem_cache_free(lab_overflow_cache, obj);
	}
	seq_puts(m, "livepatch-lab: patched\n");
	return 0;
}

static struct klp_func lab_overflow_funcs[] = {
	{
		.old_name = "cmdline_proc_show",
		.new_func = lab_overflow_cmdline_show,
	},
	{ }
};

static struct klp_object lab_overflow_objs[] = {
	{
		.name = NULL,			/* vmlinux */
		.funcs = lab_overflow_funcs,
	},
	{ }
};

static struct klp_patch lab_overflow_patch = {
	.mod = THIS_MODULE,
	.objs = lab_overflow_objs,
};

static int __init lab_overflow_init(void)
{
	int ret;

	lab_overflow_cache = kmem_cache_create("lab_overflow", LAB_OBJECT_SIZE, 0, 0, NULL);
	if (!lab_overflow_cache)
		return -ENOMEM;
	ret = klp_enable_patch(&lab_overflow_patch);
	if (ret)
		kmem_cache_destroy(lab_overflow_cache);
	return ret;
}

static void __exit lab_overflow_exit(void)
{
	kmem_cache_destroy(lab_overflow_cache);
}

module_init(lab_overflow_init);
module_exit(lab_overflow_exit);
MODULE_DESCRIPTION("livepatch-lab: a patch that writes past the end of a slab object");
MODULE_LICENSE("GPL");
MODULE_INFO(livepatch, "Y");
