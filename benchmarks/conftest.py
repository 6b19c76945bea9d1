from tests.conftest import _isolated_environment, demo_root, session_cache  # noqa: F401
