"""Baseline ASGI apps the engine benchmark compares the engine against."""
