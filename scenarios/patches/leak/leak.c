// SPDX-License-Identifier: GPL-2.0
/*
 * livepatch-lab: a patch that leaks kernel memory on every load/unload cycle.
 * It replaces cmdline_proc_show() like the good patch (/proc/cmdline reads
 * "livepatch-lab: leaky" while enabled), but its post_patch callback
 * allocates LAB_LEAK_KIB of 4 KiB slab objects (kmalloc-4k, counted in
 * SUnreclaim) that nothing ever frees: the pointers are dropped on purpose.
 * One cycle looks clean; a soak of many apply/revert cycles must show the
 * slab growing by about that much a cycle and fail it as a leak.
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

static unsigned int leak_kib = 1024;
module_param(leak_kib, uint, 0444);
MODULE_PARM_DESC(leak_kib, "KiB of slab objects leaked on every load (default 1024)");

static int lab_leak_cmdline_show(struct seq_file *m, void *v)
{
	seq_puts(m, "livepatch-lab: leaky\n");
	return 0;
}

static void lab_leak_post_patch(struct klp_object *obj)
{
	unsigned int i, leaked = 0;

	for (i = 0; i < leak_kib / 4; i++) {
		/* never freed: the leak under test */
		void *p = kmalloc(4096, GFP_KERNEL);

		if (!p)
			break;
		memset(p, 0x5a, 4096);
		leaked++;
	}
	pr_info("leaked %u KiB\n", leaked * 4);
}

static struct klp_func lab_leak_funcs[] = {
	{
		.old_name = "cmdline_proc_show",
		.new_func = lab_leak_cmdline_show,
	},
	{ }
};

static struct klp_object lab_leak_objs[] = {
	{
		.name = NULL,			/* vmlinux */
		.funcs = lab_leak_funcs,
		.callbacks = {
			.post_patch = lab_leak_post_patch,
		},
	},
	{ }
};

static struct klp_patch lab_leak_patch = {
	.mod = THIS_MODULE,
	.objs = lab_leak_objs,
};

static int __init lab_leak_init(void)
{
	return klp_enable_patch(&lab_leak_patch);
}

static void __exit lab_leak_exit(void)
{
}

module_init(lab_leak_init);
module_exit(lab_leak_exit);
MODULE_DESCRIPTION("livepatch-lab: a patch that leaks slab memory on every load");
MODULE_LICENSE("GPL");
MODULE_INFO(livepatch, "Y");
