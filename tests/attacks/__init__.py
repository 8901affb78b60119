"""Hostile candidate code for tests/test_sandbox.py: snippets appended to the reference ``data.py``.

Strings of the form ``@NAME@`` are filled in by the test (paths on the host, a port, a token).
"""
