-- First start of the postgres service: the databases next to "airflow" (POSTGRES_DB).
-- Names match deploy/topology.py DATABASES. mlflow_auth holds MLflow basic-auth's users and
-- permissions (password hashes), apart from the tracking data.
CREATE DATABASE mlflow OWNER flywheel;
CREATE DATABASE mlflow_auth OWNER flywheel;
CREATE DATABASE feast OWNER flywheel;
