"""One Prefect test harness (a temporary local API and database) for every flow test."""

import contextlib
import logging

import pytest


@pytest.fixture(scope="session")
def prefect_api():
    import prefect.settings
    from prefect.testing.utilities import prefect_test_harness

    # Generous: on a loaded machine the server takes minutes to answer; a quiet one, seconds.
    with prefect_test_harness(server_startup_timeout=300):
        url = prefect.settings.PREFECT_SERVER_DATABASE_CONNECTION_URL.value()
        yield url.split(":///", 1)[1]  # the harness' SQLite file


class _Capture(logging.Handler):
    def __init__(self):
        super().__init__(logging.DEBUG)
        self.lines: list[str] = []

    def emit(self, record):
        self.lines.append(self.format(record))


@pytest.fixture(scope="session")
def capture_logs():
    """A context manager collecting every formatted log line (root logger) while it is open,
    for the leak scans of the flow tests."""
    @contextlib.contextmanager
    def capture():
        handler = _Capture()
        logging.getLogger().addHandler(handler)
        try:
            yield handler.lines
        finally:
            logging.getLogger().removeHandler(handler)
    return capture
