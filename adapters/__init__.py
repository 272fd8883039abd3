"""Integrations, installed as ``st_backend.adapters`` (never as a top-level ``adapters`` module)."""
