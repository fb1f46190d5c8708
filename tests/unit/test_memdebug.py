"""Which of the kernel's memory detectors a guest boots with, by what its kernel was built with."""
import pytest

from livepatch_lab.lab.run import memdebug
from livepatch_lab.lab.scenario.schema import debug_facilities
from livepatch_lab.lab.scenario.specs import DEBUG_FACILITIES, DebugSpec
from livepatch_lab.supply.kernels import tree as kerneltree

# each Debian line's config, as far as the facilities go (DESIGN.md: "Kernel facilities per line")
LINE_6_1 = {"CONFIG_SLUB_DEBUG": "y", "CONFIG_KFENCE": "n", "CONFIG_PAGE_POISONING": "y"}
LINE_7 = {"CONFIG_SLUB_DEBUG": "y", "CONFIG_KFENCE": "y", "CONFIG_PAGE_POISONING": "y"}


def test_by_default_every_facility_the_kernel_has_is_on_with_its_command_line():
    plan = memdebug.choose(DebugSpec(), LINE_7)
    assert plan.active == DEBUG_FACILITIES and plan.absent == {}
    assert plan.append == f"slub_debug=FZP kfence.sample_interval={memdebug.KFENCE_INTERVAL_MS} page_poison=1"


def test_a_facility_the_kernel_lacks_is_reported_absent_not_dropped():
    plan = memdebug.choose(DebugSpec(), LINE_6_1)
    assert plan.active == ("slub", "poison")
    assert plan.absent == {"kfence": "this kernel is built without CONFIG_KFENCE"}
    assert plan.describe()["absent"] == {"kfence": "this kernel is built without CONFIG_KFENCE"}
    assert "kfence" not in plan.append


def test_none_boots_the_kernel_as_it_ships():
    plan = memdebug.choose(DebugSpec(()), LINE_7)
    assert plan.active == () and plan.append == "" and plan.describe()["requested"] == []


def test_without_a_kernel_config_the_facilities_are_asked_for_and_marked_unverified():
    plan = memdebug.choose(DebugSpec(("slub",)), None)
    assert plan.active == ("slub",) and plan.unverified and plan.describe()["unverified"] is True


def test_a_kernel_config_is_read_with_unset_options_as_n(tmp_path):
    config = tmp_path / "config"
    config.write_text("CONFIG_SLUB_DEBUG=y\n# CONFIG_KFENCE is not set\nCONFIG_HZ=250\nCONFIG_X=\"a b\"\n")
    assert kerneltree.config_options(config) == {"CONFIG_SLUB_DEBUG": "y", "CONFIG_KFENCE": "n",
                                                 "CONFIG_HZ": "250", "CONFIG_X": "a b"}
    assert kerneltree.config_options(tmp_path / "missing") is None


@pytest.mark.parametrize("given,facilities", [
    (["slub"], ("slub",)), (["poison", "slub"], ("slub", "poison")), ("none", ()), ([], ()),
    ("all", DEBUG_FACILITIES), ("kfence,slub", ("slub", "kfence"))])
def test_the_debug_field_and_option_name_facilities(given, facilities):
    assert debug_facilities(given) == facilities


@pytest.mark.parametrize("given", [["kasan"], "slub,bogus", ["slub", "pagealloc"]])
def test_an_unknown_facility_is_refused_naming_it(given):
    with pytest.raises(ValueError, match="unknown debug facility"):
        debug_facilities(given)


def test_a_facility_built_blind_is_absent_saying_why():
    line_5_10 = {"CONFIG_SLUB_DEBUG": "y", "CONFIG_PAGE_POISONING": "y", "CONFIG_PAGE_POISONING_NO_SANITY": "y"}
    plan = memdebug.choose(DebugSpec(), line_5_10)
    assert plan.active == ("slub",)
    assert plan.absent["poison"] == ("this kernel is built with CONFIG_PAGE_POISONING_NO_SANITY: freed pages are "
                                     "filled but never checked")
    assert "page_poison" not in plan.append
