-- Run once by the postgres image on first start (empty data volume) from
-- /docker-entrypoint-initdb.d/. Creates the databases for the MLflow tracking
-- store, MLflow's basic-auth users and the Prefect server, all owned by
-- $POSTGRES_USER (the connecting user).
CREATE DATABASE mlflow;
CREATE DATABASE mlflow_auth;
CREATE DATABASE prefect;
