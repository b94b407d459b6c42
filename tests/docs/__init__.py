"""Tests that the documentation's promises hold: every README code block runs as written."""
