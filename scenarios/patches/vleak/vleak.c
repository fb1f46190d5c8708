// SPDX-License-Identifier: GPL-2.0
/*
 * livepatch-lab: a patch that leaks vmalloc'ed memory on every load. It
 * replaces cmdline_proc_show() (/proc/cmdline reads "livepatch-lab: patched"),
 * and its post_patch callback allocates leak_mib MiB (default 8) with vmalloc
 * for a table it never frees: the pointer is dropped on purpose. Nothing is
 * printed and unreclaimable slab does not move; /proc/meminfo's VmallocUsed
 * stays 8 MiB higher after the module is gone, and MemAvailable lower.
 */
#define pr_fmt(fmt) KBUILD_MODNAME ": " fmt

#include <linux/kernel.h>
#include <linux/module.h>
#include <linux/version.h>
#include <linux/livepatch.h>
#include <linux/seq_file.h>
#include <linux/string.h>
#include <linux/vmalloc.h>

#if LINUX_VERSION_CODE < KERNEL_VERSION(5, 1, 0)
#error "livepatch-lab patches use klp_enable_patch() (Linux 5.1 and later)"
#endif

static unsigned int leak_mib = 8;
module_param(leak_mib, uint, 0444);
MODULE_PARM_DESC(leak_mib, "MiB of vmalloc'ed memory leaked on every load (default 8)");

static int lab_vleak_cmdline_show(struct seq_file *m, void *v)
{
	seq_puts(m, "livepatch-lab: patched\n");
	return 0;
}

static void lab_vleak_post_patch(struct klp_object *obj)
{
	size_t size = (size_t)leak_mib << 20;
	void *table = vmalloc(size);

	if (table)
		memset(table, 0x5a, size);	/* never freed: the leak under test */
}

static struct klp_func lab_vleak_funcs[] = {
	{
		.old_name = "cmdline_proc_show",
		.new_func = lab_vleak_cmdline_show,
	},
	{ }
};

static struct klp_object lab_vleak_objs[] = {
	{
		.name = NULL,			/* vmlinux */
		.funcs = lab_vleak_funcs,
		.callbacks = {
			.post_patch = lab_vleak_post_patch,
		},
	},
	{ }
};

static struct klp_patch lab_vleak_patch = {
	.mod = THIS_MODULE,
	.objs = lab_vleak_objs,
};

static int __init lab_vleak_init(void)
{
	return klp_enable_patch(&lab_vleak_patch);
}

static void __exit lab_vleak_exit(void)
{
}

module_init(lab_vleak_init);
module_exit(lab_vleak_exit);
MODULE_DESCRIPTION("livepatch-lab: a patch that leaks vmalloc'ed memory on every load");
MODULE_LICENSE("GPL");
MODULE_INFO(livepatch, "Y");
