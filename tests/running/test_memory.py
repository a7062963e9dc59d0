"""corebuild.running.memory: the malloc arena cap reaches this process and its workers."""

from __future__ import annotations

import ctypes

import pytest

from corebuild.running import memory


@pytest.fixture
def calls(monkeypatch):
    seen = []

    class Libc:
        def mallopt(self, param, value):
            seen.append((param, value))
            return 1

    monkeypatch.setattr(ctypes, "CDLL", lambda name: Libc())
    monkeypatch.setenv(memory.ENV, "")
    monkeypatch.delenv(memory.ENV)
    return seen


def test_the_cap_is_set_here_and_for_workers(calls):
    import os

    assert memory.limit_malloc_arenas(2) == 2
    assert os.environ[memory.ENV] == "2" and calls == [(-8, 2)]


def test_the_users_environment_wins_and_zero_leaves_glibc_alone(calls, monkeypatch):
    monkeypatch.setenv(memory.ENV, "4")
    assert memory.limit_malloc_arenas(2) == 4 and calls == [(-8, 4)]
    monkeypatch.delenv(memory.ENV)
    assert memory.limit_malloc_arenas(0) == 0 and calls == [(-8, 4)]
