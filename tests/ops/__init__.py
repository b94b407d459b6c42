"""Tests of the operators' assets in ops/."""
