"""Tests of counterarg.sweep, one file per module; a package so its module names (test_cli, ...) do
not clash with tests/."""
