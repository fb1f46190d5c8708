// SPDX-License-Identifier: GPL-2.0
/*
 * livepatch-lab: a patch whose new function reads memory it has freed. It
 * replaces cmdline_proc_show() (/proc/cmdline reads "livepatch-lab: patched"),
 * and on every call allocates a small buffer, frees it, then reads it: the
 * read returns stale or poisoned bytes and nothing is printed, until the
 * allocator hands that memory to someone else. KFENCE (6.12, 7: built in,
 * off until kfence.sample_interval is set) puts a sampled allocation on a
 * guarded page and reports "BUG: KFENCE: use-after-free read in
 * lab_uaf_cmdline_show" at the read. 5.10 and 6.1 have no KFENCE: there the
 * read goes unseen (SLUB's poisoning checks writes, not reads).
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

static int lab_uaf_cmdline_show(struct seq_file *m, void *v)
{
	char *buf = kmalloc(48, GFP_KERNEL);
	char stale = 0;

	if (buf) {
		memset(buf, 'p', 48);
		kfree(buf);
		OPTIMIZER_HIDE_VAR(buf);	/* the compiler must not see the use after free */
		stale = READ_ONCE(buf[0]);	/* the bug: a read of freed memory */
	}
	seq_printf(m, "livepatch-lab: patched%s\n", stale == 'x' ? "!" : "");
	return 0;
}

static struct klp_func lab_uaf_funcs[] = {
	{
		.old_name = "cmdline_proc_show",
		.new_func = lab_uaf_cmdline_show,
	},
	{ }
};

static struct klp_object lab_uaf_objs[] = {
	{
		.name = NULL,			/* vmlinux */
		.funcs = lab_uaf_funcs,
	},
	{ }
};

static struct klp_patch lab_uaf_patch = {
	.mod = THIS_MODULE,
	.objs = lab_uaf_objs,
};

static int __init lab_uaf_init(void)
{
	return klp_enable_patch(&lab_uaf_patch);
}

static void __exit lab_uaf_exit(void)
{
}

module_init(lab_uaf_init);
module_exit(lab_uaf_exit);
MODULE_DESCRIPTION("livepatch-lab: a patch that reads memory after freeing it");
MODULE_LICENSE("GPL");
MODULE_INFO(livepatch, "Y");
