"""Serving: the worker process, the pool of them, health and metrics endpoints."""
