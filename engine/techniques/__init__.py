"""Techniques a variant can apply on top of a backend (e.g. prompt compression)."""
