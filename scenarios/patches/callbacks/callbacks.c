// SPDX-License-Identifier: GPL-2.0
/*
 * livepatch-lab: a patch with all four callbacks on its vmlinux object.
 * Replaces cmdline_proc_show() (/proc/cmdline reads
 * "lab-callbacks: patched") and prints one line per callback:
 *
 *   lab_callbacks: pre_patch vmlinux, returning <ret>   klp_enable_patch(), before patching
 *   lab_callbacks: post_patch vmlinux                   the patching transition completed
 *   lab_callbacks: pre_unpatch vmlinux                  enabled=0, before the unpatching transition
 *   lab_callbacks: post_unpatch vmlinux                 the unpatching transition completed
 *
 * The module parameter pre_patch_ret (default 0) is what pre_patch returns:
 * with pre_patch_ret=-19 the kernel refuses the patch (insmod fails with
 * ENODEV, the kernel prints "pre-patch callback failed"), runs no other
 * callback and leaves nothing behind: no module, no /sys/kernel/livepatch
 * entry, /proc/cmdline unchanged.
 * The lab must see the four lines in that order, or only pre_patch and the
 * refusal.
 */
#define pr_fmt(fmt) KBUILD_MODNAME ": " fmt

#include <linux/kernel.h>
#include <linux/module.h>
#include <linux/moduleparam.h>
#include <linux/version.h>
#include <linux/err.h>
#include <linux/livepatch.h>
#include <linux/seq_file.h>

#if LINUX_VERSION_CODE < KERNEL_VERSION(5, 1, 0)
#error "livepatch-lab patches use klp_enable_patch() (Linux 5.1 and later)"
#endif

static int pre_patch_ret;
module_param(pre_patch_ret, int, 0444);
MODULE_PARM_DESC(pre_patch_ret, "value the pre_patch callback returns (0 or a negative errno; default 0)");

static const char *lab_callbacks_obj_name(const struct klp_object *obj)
{
	return obj->name ? obj->name : "vmlinux";
}

static int lab_callbacks_pre_patch(struct klp_object *obj)
{
	pr_info("pre_patch %s, returning %d\n", lab_callbacks_obj_name(obj), pre_patch_ret);
	return pre_patch_ret;
}

static void lab_callbacks_post_patch(struct klp_object *obj)
{
	pr_info("post_patch %s\n", lab_callbacks_obj_name(obj));
}

static void lab_callbacks_pre_unpatch(struct klp_object *obj)
{
	pr_info("pre_unpatch %s\n", lab_callbacks_obj_name(obj));
}

static void lab_callbacks_post_unpatch(struct klp_object *obj)
{
	pr_info("post_unpatch %s\n", lab_callbacks_obj_name(obj));
}

static int lab_callbacks_cmdline_show(struct seq_file *m, void *v)
{
	seq_puts(m, "lab-callbacks: patched\n");
	return 0;
}

static struct klp_func lab_callbacks_funcs[] = {
	{
		.old_name = "cmdline_proc_show",
		.new_func = lab_callbacks_cmdline_show,
	},
	{ }
};

static struct klp_object lab_callbacks_objs[] = {
	{
		.name = NULL,			/* vmlinux */
		.funcs = lab_callbacks_funcs,
		.callbacks = {
			.pre_patch = lab_callbacks_pre_patch,
			.post_patch = lab_callbacks_post_patch,
			.pre_unpatch = lab_callbacks_pre_unpatch,
			.post_unpatch = lab_callbacks_post_unpatch,
		},
	},
	{ }
};

static struct klp_patch lab_callbacks_patch = {
	.mod = THIS_MODULE,
	.objs = lab_callbacks_objs,
};

static int __init lab_callbacks_init(void)
{
	/*
	 * A positive value would reach the module loader as a "suspicious"
	 * init return (warning + stack dump) instead of a clean refusal.
	 */
	if (pre_patch_ret > 0 || pre_patch_ret < -MAX_ERRNO) {
		pr_err("pre_patch_ret=%d is not 0 or a negative errno\n", pre_patch_ret);
		return -EINVAL;
	}
	return klp_enable_patch(&lab_callbacks_patch);
}

static void __exit lab_callbacks_exit(void)
{
}

module_init(lab_callbacks_init);
module_exit(lab_callbacks_exit);
MODULE_DESCRIPTION("livepatch-lab: cmdline_proc_show patch with pre/post (un)patch callbacks");
MODULE_LICENSE("GPL");
MODULE_INFO(livepatch, "Y");
