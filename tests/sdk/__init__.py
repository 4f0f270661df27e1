"""Tests of the fx SDK (fx_jupyter/sdk)."""
