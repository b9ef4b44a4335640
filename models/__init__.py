"""Shipped default bundles live in this folder (one sub-folder per bundle)."""
