"""Naming where a frozen guest's vCPUs are, from registers and symbol tables."""
from livepatch_lab.lab.run import symbols
from livepatch_lab.lab.run.forensics import text_functions

KALLSYMS = """\
ffffffff81000000 T _text
ffffffff81000000 T startup_64
ffffffff81192870 T stop_machine_yield
ffffffff811928a0 t multi_cpu_stop
ffffffff81192a00 D some_data
"""

REGISTERS = """\
CPU#0
RAX=0000000000000000 RBX=ffff888003c1fd88 RCX=0000000000000000 RDX=0000000000000000
RIP=ffffffffc0384007 RFL=00000246 [---Z-P-] CPL=0 II=0 A20=1 SMM=0 HLT=0
CPU#1
RAX=0000000000000001 RBX=0000000000000000
RIP=ffffffff811928b4 RFL=00000046 [---Z-P-] CPL=0 II=0 A20=1 SMM=0 HLT=0
"""

OBJDUMP = """\
SYMBOL TABLE:
0000000000000000 l    d  .text	0000000000000000 .text
0000000000000000 l     F .text	0000000000000009 lab_hang_forever
0000000000000000 l     F .init.text	0000000000000011 lab_hang_init
0000000000000010 l     F .text	0000000000000030 lab_hang_cmdline_show
0000000000000000 l     O .data	0000000000000010 lab_hang_funcs
"""


def test_each_vcpu_is_named_by_function_and_offset():
    kmap = symbols.SymbolMap.parse(KALLSYMS)
    mod = symbols.SymbolMap.parse(text_functions(OBJDUMP), 0xffffffffc0384000, " [lab_hang]")
    assert symbols.describe_vcpus(REGISTERS, kmap.merged(mod)) == [
        "vCPU 0 at lab_hang_forever [lab_hang]+0x7 (ffffffffc0384007)",
        "vCPU 1 at multi_cpu_stop+0x14 (ffffffff811928b4)",
    ]


def test_only_text_functions_of_a_module_count_because_sysfs_gives_the_text_base_alone():
    assert text_functions(OBJDUMP).splitlines() == ["0000000000000000 t lab_hang_forever",
                                                    "0000000000000010 t lab_hang_cmdline_show"]


def test_data_symbols_are_not_functions():
    kmap = symbols.SymbolMap.parse(KALLSYMS)
    assert kmap.name(0xffffffff81192a04) == "multi_cpu_stop+0x164"


def test_a_kaslr_slide_moves_the_cached_map_to_this_boots_text():
    kmap = symbols.slid(symbols.SymbolMap.parse(KALLSYMS), 0xffffffff9a000000)
    assert kmap.name(0xffffffff9a1928b4) == "multi_cpu_stop+0x14"


def test_an_unnamed_address_still_says_what_kind_of_code_it_is():
    lines = symbols.describe_vcpus(REGISTERS, None)
    assert lines[0] == "vCPU 0 at a module's code (ffffffffc0384007)"
    assert lines[1] == "vCPU 1 at an unknown kernel address (ffffffff811928b4)"
    assert "user space" in symbols.describe_vcpus("RIP=00007f0012345678 RFL=0", None)[0]


def test_far_from_any_symbol_is_no_name():
    kmap = symbols.SymbolMap.parse(KALLSYMS)
    assert kmap.name(0xffffffff89000000) is None
    assert kmap.name(0xffffffff80000000) is None
