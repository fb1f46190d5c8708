"""Long host work says how far it is while it runs, and stops saying so when it ends."""
import logging
import threading

from livepatch_lab.core import progress


def test_a_running_download_is_reported_in_bytes_of_its_total_until_it_ends(tmp_path, caplog):
    target = tmp_path / "partial"
    target.mkdir()
    (target / "x.deb").write_bytes(b"\0" * 2_000_000)
    seen = threading.Event()

    class Handler(logging.Handler):
        def emit(self, record):
            seen.set()

    handler = Handler()
    progress.log.addHandler(handler)
    try:
        with caplog.at_level(logging.INFO, logger=progress.log.name):
            with progress.ticking("downloading linux-image", done=progress.bytes_done(target, 8_000_000), every=0.05):
                assert seen.wait(10)
            after = len(caplog.records)
            quiet = threading.Event()
            assert not quiet.wait(0.3)   # a tick would have come by now had the ticker lived on
    finally:
        progress.log.removeHandler(handler)
    assert len(caplog.records) == after
    assert caplog.records[0].getMessage().startswith("downloading linux-image: 2.0 of 8.0 MB (25 %), ")


def test_a_build_says_its_elapsed_time_and_what_it_usually_takes(caplog):
    done = threading.Event()
    with caplog.at_level(logging.INFO, logger=progress.log.name):
        with progress.ticking("image default: mmdebstrap", usually="2-4 min", every=0.05):
            while not caplog.records:
                done.wait(0.05)
    assert caplog.records[0].getMessage().endswith("s so far (usually 2-4 min)")


def test_sizes_of_missing_or_vanishing_paths_are_zero(tmp_path):
    assert progress.size_of(tmp_path / "missing") == 0
    (tmp_path / "f").write_bytes(b"abc")
    assert progress.size_of(tmp_path / "f") == 3 and progress.size_of(tmp_path) == 3
    assert progress.bytes_done(tmp_path, None)() == "0.0 MB"
