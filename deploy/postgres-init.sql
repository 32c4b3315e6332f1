-- First start of the postgres service: the databases next to "airflow" (POSTGRES_DB).
-- Names match deploy/topology.py DATABASES.
CREATE DATABASE mlflow OWNER flywheel;
CREATE DATABASE feast OWNER flywheel;
