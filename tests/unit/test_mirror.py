"""Finding Debian's archive in this host's apt sources (one-line and deb822 formats)."""
import pytest

from livepatch_lab.core.errors import ConfigError
from livepatch_lab.supply.mirror import Mirrors, archive_from_sources, debian_mirrors, host_sources

BOOKWORM_LIST = """\
# See /etc/apt/sources.list.d/ for more
deb http://security.debian.org/debian-security bookworm-security main contrib non-free-firmware
deb-src http://ftp.fr.debian.org/debian bookworm main
deb [arch=amd64 signed-by=/usr/share/keyrings/debian-archive-keyring.gpg] http://ftp.fr.debian.org/debian/ bookworm main non-free-firmware
deb http://ftp.fr.debian.org/debian bookworm-updates main
"""

TRIXIE_SOURCES = """\
Types: deb deb-src
URIs: http://security.debian.org/debian-security
Suites: trixie-security
Components: main
Signed-By: /usr/share/keyrings/debian-archive-keyring.gpg

# the archive itself
Types: deb
URIs: https://deb.debian.org/debian/
Suites: trixie trixie-updates
Components: main
Signed-By:
 -----BEGIN PGP PUBLIC KEY BLOCK-----
 Suites: this is key material, not a field
 -----END PGP PUBLIC KEY BLOCK-----
"""


@pytest.fixture
def apt(tmp_path):
    """A fake /etc/apt: write(name, text) puts a file in it (``sources.list`` or under ``.d``)."""
    root = tmp_path / "apt"
    (root / "sources.list.d").mkdir(parents=True)

    def write(name, text):
        path = root / name if name == "sources.list" else root / "sources.list.d" / name
        path.write_text(text)
        return path

    write.root = root
    return write


def test_one_line_format_skips_security_source_lines_and_options(apt):
    path = apt("sources.list", BOOKWORM_LIST)
    assert archive_from_sources([path]) == "http://ftp.fr.debian.org/debian"


def test_deb822_format_skips_the_security_stanza(apt):
    path = apt("debian.sources", TRIXIE_SOURCES)
    assert archive_from_sources([path]) == "https://deb.debian.org/debian"


@pytest.mark.parametrize("line", [
    "deb http://mirror.internal/debian-sec bookworm-security main",
    "deb http://security.debian.org/ bookworm-security main",
    "deb http://security.debian.org/ bullseye/updates main",   # the pre-bullseye naming
])
def test_a_security_suite_is_skipped_whatever_its_uri(apt, line):
    path = apt("sources.list", line + "\ndeb http://deb.debian.org/debian bookworm main\n")
    assert archive_from_sources([path]) == "http://deb.debian.org/debian"


def test_a_disabled_deb822_stanza_or_a_deb_src_only_one_is_ignored(apt):
    path = apt("debian.sources", """\
Types: deb
URIs: http://disabled.example/debian
Suites: bookworm
Enabled: no

Types: deb-src
URIs: http://sources-only.example/debian
Suites: bookworm

Types: deb
URIs: http://used.example/debian
Suites: bookworm
""")
    assert archive_from_sources([path]) == "http://used.example/debian"


def test_non_debian_suites_are_not_taken_for_debian(apt):
    ubuntu = apt("ubuntu.list", "deb http://archive.ubuntu.com/ubuntu jammy main universe\n"
                                "deb http://archive.ubuntu.com/ubuntu jammy-security main\n")
    other = apt("docker.list", "deb [arch=amd64] https://download.docker.com/linux/debian bookworm stable\n")
    assert archive_from_sources([ubuntu]) is None
    # a third-party repository that uses Debian's suite names *does* match: order decides
    assert archive_from_sources([other]) == "https://download.docker.com/linux/debian"


@pytest.mark.parametrize("suite", ["bullseye", "bookworm-backports", "trixie", "sid", "unstable", "stable",
                                   "bookworm-proposed-updates"])
def test_every_debian_suite_name_counts(apt, suite):
    path = apt("x.list", f"deb http://m.example/debian {suite} main\n")
    assert archive_from_sources([path]) == "http://m.example/debian"


def test_commented_out_lines_do_not_count(apt):
    path = apt("sources.list", "#deb http://old.example/debian bookworm main\n"
                               "deb http://new.example/debian bookworm main # trailing comment\n")
    assert archive_from_sources([path]) == "http://new.example/debian"


def test_missing_files_are_skipped_and_the_first_match_wins(apt, tmp_path):
    first = apt("a.list", "deb http://first.example/debian bookworm main\n")
    second = apt("b.sources", "Types: deb\nURIs: http://second.example/debian\nSuites: bookworm\n")
    assert archive_from_sources([tmp_path / "missing.list", first, second]) == "http://first.example/debian"
    assert archive_from_sources([second, first]) == "http://second.example/debian"


def test_host_sources_lists_sources_list_then_sorted_parts(apt):
    apt("sources.list", "")
    for name in ("z.sources", "b.list", "a.list.save", "c.list.disabled", "README"):
        apt(name, "")
    root = apt.root
    assert host_sources(root) == [root / "sources.list", root / "sources.list.d" / "b.list",
                                  root / "sources.list.d" / "z.sources"]


def test_debian_mirrors_reads_the_host_configuration(apt):
    apt("debian.sources", TRIXIE_SOURCES)   # no sources.list at all, as on a fresh trixie
    assert debian_mirrors(apt_root=apt.root) == Mirrors("https://deb.debian.org/debian",
                                                        "https://deb.debian.org/debian-security")


def test_an_override_wins_over_the_host(apt):
    apt("sources.list", BOOKWORM_LIST)
    m = debian_mirrors("http://mirror.internal/debian/", apt_root=apt.root)
    assert m == Mirrors("http://mirror.internal/debian", "http://mirror.internal/debian-security")


def test_an_override_works_on_a_host_whose_apt_knows_no_debian(apt):
    apt("sources.list", "deb http://archive.ubuntu.com/ubuntu jammy main\n")
    assert debian_mirrors("http://deb.debian.org/debian", apt_root=apt.root).archive == \
        "http://deb.debian.org/debian"


def test_no_debian_archive_anywhere_is_a_config_error_that_says_what_to_set(apt):
    apt("sources.list", "deb http://archive.ubuntu.com/ubuntu jammy main\n")
    with pytest.raises(ConfigError) as err:
        debian_mirrors(apt_root=apt.root)
    assert err.value.field == "LIVEPATCH_LAB_MIRROR"
    assert "LIVEPATCH_LAB_MIRROR" in str(err.value) and str(apt.root) in str(err.value)


def test_an_empty_apt_dir_is_a_config_error_too(tmp_path):
    with pytest.raises(ConfigError, match="LIVEPATCH_LAB_MIRROR"):
        debian_mirrors(apt_root=tmp_path / "no-apt-here")


@pytest.mark.parametrize("archive, security", [
    ("http://deb.debian.org/debian", "http://deb.debian.org/debian-security"),
    ("http://deb.debian.org/debian/", "http://deb.debian.org/debian-security"),
    ("http://proxy:3142/debian", "http://proxy:3142/debian-security"),
    ("http://mirror.example/pub/linux/debian-archive", "http://mirror.example/pub/linux/debian-archive-security"),
])
def test_the_security_archive_is_derived_from_the_archive(archive, security):
    assert Mirrors.from_archive(archive) == Mirrors(archive.rstrip("/"), security)
