-- Run once by the postgres image on first start (empty data volume) from
-- /docker-entrypoint-initdb.d/. Creates the databases for the MLflow tracking
-- store and the Prefect server, both owned by $POSTGRES_USER (the connecting user).
CREATE DATABASE mlflow;
CREATE DATABASE prefect;
