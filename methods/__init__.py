"""Method plugins: one folder each, registering itself in its `__init__.py`."""
