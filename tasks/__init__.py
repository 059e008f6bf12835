"""One module per pipeline stage: pure, typed stage logic plus one thin Prefect task."""
