// SPDX-License-Identifier: GPL-2.0
/*
 * livepatch-lab: a patch whose new function writes to a page it has freed. It
 * replaces cmdline_proc_show() (/proc/cmdline reads "livepatch-lab: patched"),
 * and on every call takes a page for scratch space, gives it back, then
 * stores one more byte into it: whoever gets that page next finds it changed.
 * Nothing is printed on a distribution kernel. With page poisoning on
 * (page_poison=1), freed pages are filled with a pattern that is checked when
 * the page is handed out again: "pagealloc: memory corruption", with the
 * stack of the page's next user (the victim, not the culprit).
 */
#define pr_fmt(fmt) KBUILD_MODNAME ": " fmt

#include <linux/kernel.h>
#include <linux/module.h>
#include <linux/version.h>
#include <linux/livepatch.h>
#include <linux/seq_file.h>
#include <linux/gfp.h>

#if LINUX_VERSION_CODE < KERNEL_VERSION(5, 1, 0)
#error "livepatch-lab patches use klp_enable_patch() (Linux 5.1 and later)"
#endif

static int lab_pagewrite_cmdline_show(struct seq_file *m, void *v)
{
	unsigned long page = __get_free_page(GFP_KERNEL);

	if (page) {
		memset((void *)page, 'p', 64);
		free_page(page);
		OPTIMIZER_HIDE_VAR(page);	/* the compiler must not see the use after free */
		WRITE_ONCE(*(char *)(page + 8), 'x');	/* the bug: a store into a freed page */
	}
	seq_puts(m, "livepatch-lab: patched\n");
	return 0;
}

static struct klp_func lab_pagewrite_funcs[] = {
	{
		.old_name = "cmdline_proc_show",
		.new_func = lab_pagewrite_cmdline_show,
	},
	{ }
};

static struct klp_object lab_pagewrite_objs[] = {
	{
		.name = NULL,			/* vmlinux */
		.funcs = lab_pagewrite_funcs,
	},
	{ }
};

static struct klp_patch lab_pagewrite_patch = {
	.mod = THIS_MODULE,
	.objs = lab_pagewrite_objs,
};

static int __init lab_pagewrite_init(void)
{
	return klp_enable_patch(&lab_pagewrite_patch);
}

static void __exit lab_pagewrite_exit(void)
{
}

module_init(lab_pagewrite_init);
module_exit(lab_pagewrite_exit);
MODULE_DESCRIPTION("livepatch-lab: a patch that writes to a page after freeing it");
MODULE_LICENSE("GPL");
MODULE_INFO(livepatch, "Y");
