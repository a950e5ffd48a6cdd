"""A canary for tests/test_monai_allowlist.py: importing this module, or calling `fire`, means a config string became code."""

FIRED: list[tuple] = []


def fire(*args, **kwargs):
    FIRED.append((args, kwargs))
    return 0
