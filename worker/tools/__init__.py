"""Tools around the worker: export, validate, bench, doctor, the demo. Each imports what it needs lazily."""
