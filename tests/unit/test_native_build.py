"""Where the fused kernels are cached: a private directory, never one someone else made."""

from __future__ import annotations

import os
import stat
import tempfile

import pytest

from tms_slt import native_build


@pytest.fixture
def no_user_cache(tmp_path, monkeypatch):
    """No usable ~/.cache (HOME is a file) and a temporary directory of the test's own."""
    home = tmp_path / "home-is-a-file"
    home.write_text("")
    monkeypatch.setenv("HOME", str(home))
    monkeypatch.delenv("XDG_CACHE_HOME", raising=False)
    monkeypatch.delenv("TMS_SLT_CACHE", raising=False)
    tmp = tmp_path / "tmp"
    tmp.mkdir()
    monkeypatch.setattr(tempfile, "tempdir", str(tmp))
    return tmp


def _private(path) -> bool:
    info = os.lstat(path)
    return info.st_uid == os.getuid() and not stat.S_IMODE(info.st_mode) & 0o077


def test_the_temporary_fallback_is_created_private(no_user_cache):
    chosen = native_build.cache_dir()
    assert chosen == no_user_cache / f"tms_slt-{os.getuid()}"
    assert _private(chosen)


def test_a_shared_directory_at_the_predictable_name_is_not_used(no_user_cache):
    planted = no_user_cache / f"tms_slt-{os.getuid()}"
    planted.mkdir(mode=0o777)
    os.chmod(planted, 0o777)  # anyone could have put a library in it
    chosen = native_build.cache_dir()
    assert chosen != planted and _private(chosen)
    assert not native_build.private_dir(planted)


def test_a_directory_of_another_user_is_not_used(tmp_path):
    if os.getuid() != 0:
        pytest.skip("giving a directory to another user needs root")
    other = tmp_path / "theirs"
    other.mkdir(mode=0o755)
    os.chown(other, 65534, 65534)
    assert not native_build.private_dir(other)
    assert native_build.private_dir(tmp_path / "mine")
