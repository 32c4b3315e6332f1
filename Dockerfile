# One image for every Flywheel service: Airflow (all components, Celery workers), MLflow server,
# Feast feature server, serving API, Evidently UI, the Ray head and worker nodes (the production
# engine: Ray and Ray Client need the same Ray, Python and code on the cluster and the clients). Dependencies are the pinned set in
# constraints.txt; the source is installed last so code edits rebuild only the final layers.
#
#   docker build -t flywheel:latest .                                            # CPU torch
#   docker build -t flywheel:cuda --build-arg TORCH_INDEX=https://download.pytorch.org/whl/cu128 .
#
# The CUDA variant differs only in the torch wheel: CUDA wheels carry the CUDA runtime and cuDNN
# as pip packages, so the base stays python:3.11-slim; the NVIDIA driver comes from the host
# (NVIDIA Container Toolkit, `deploy.resources.reservations.devices` in docker-compose.yaml).
ARG PYTHON_IMAGE=python:3.11-slim-bookworm
FROM ${PYTHON_IMAGE}

# CPU wheels by default; cu128 (or another CUDA index) for the GPU worker's image.
ARG TORCH_INDEX=https://download.pytorch.org/whl/cpu
ARG AIRFLOW_UID=50000

ENV PYTHONDONTWRITEBYTECODE=1 \
    PYTHONUNBUFFERED=1 \
    PIP_NO_CACHE_DIR=1 \
    PIP_DISABLE_PIP_VERSION_CHECK=1 \
    AIRFLOW_HOME=/opt/airflow \
    FLYWHEEL_HOME=/opt/flywheel/state \
    FLYWHEEL_PROJECT_DIR=/opt/flywheel

# curl: health checks; libgomp1: torch/implicit OpenMP; libpq5: Postgres clients
RUN apt-get update \
 && apt-get install -y --no-install-recommends curl libgomp1 libpq5 \
 && rm -rf /var/lib/apt/lists/*

WORKDIR /opt/flywheel

# 1. dependencies only (cached while pyproject.toml and constraints.txt are unchanged)
COPY pyproject.toml constraints.txt ./
RUN for p in core ingestion validation features training monitoring serving simulation flywheel; do \
      mkdir -p "$p" && touch "$p/__init__.py"; done \
 && touch README.md \
 && pip install --extra-index-url "${TORCH_INDEX}" -c constraints.txt . \
 && pip uninstall -y flywheel \
 && python -c "import flask_wtf"  # MLflow's basic-auth app (mlflow[auth]) runs the mlflow service

# 2. the source: library, DAGs, plugins, Feast repository, deployment config
COPY core/ core/
COPY ingestion/ ingestion/
COPY validation/ validation/
COPY features/ features/
COPY training/ training/
COPY monitoring/ monitoring/
COPY serving/ serving/
COPY simulation/ simulation/
COPY flywheel/ flywheel/
COPY dags/ dags/
COPY plugins/ plugins/
COPY feature_repo/ feature_repo/
COPY deploy/ deploy/
# deploy/: the MLflow launcher (basic auth, users), airflow-init's secret checker
COPY README.md ./
RUN pip install --no-deps -c constraints.txt . \
 && useradd --uid "${AIRFLOW_UID}" --gid 0 --home-dir /opt/airflow --create-home airflow \
 && mkdir -p /opt/airflow /opt/flywheel/state /opt/ray-auth \
 && chown -R "${AIRFLOW_UID}:0" /opt/airflow /opt/flywheel/state /opt/ray-auth \
 && chmod -R g+rwX /opt/airflow /opt/flywheel/state \
 && chmod 750 /opt/ray-auth

ENV PYTHONPATH=/opt/flywheel
USER ${AIRFLOW_UID}
# Ray: 6379 (GCS, nodes join), 10001 (Ray Client); both internal to the compose network
EXPOSE 8080 8974 5000 6566 8000 8001 6379 10001
CMD ["flywheel", "--help"]
