"""Shared test configuration: pytest-jupyter's server fixtures for every test package."""

pytest_plugins = ["pytest_jupyter.jupyter_server"]
