"""Test doubles, one module per port."""
