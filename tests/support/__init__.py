"""Shared test helpers: a driven clock, real upstream servers, misbehaving TCP peers."""
