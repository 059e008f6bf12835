"""One Prefect test harness (a temporary local API and database) for every flow test."""

import pytest


@pytest.fixture(scope="session")
def prefect_api():
    import prefect.settings
    from prefect.testing.utilities import prefect_test_harness

    # Generous: on a loaded machine the server takes minutes to answer; a quiet one, seconds.
    with prefect_test_harness(server_startup_timeout=300):
        url = prefect.settings.PREFECT_SERVER_DATABASE_CONNECTION_URL.value()
        yield url.split(":///", 1)[1]  # the harness' SQLite file
