"""Tests of the fx service (fx_jupyter.server_ext)."""
