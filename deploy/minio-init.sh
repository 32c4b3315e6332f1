#!/bin/sh
# minio-init (one shot): the bucket, and one MinIO user per client service with the policy
# deploy/minio/<user>.json attached (users and policies: deploy/topology.py S3_USERS). Runs in
# the minio/mc image with the root credentials, which no other service than minio holds.
# Re-running it is harmless: users get their current secret from .env, policies are replaced.
set -eu
here=${0%/*}  # built-ins only: the minio/mc image is minimal
sh "$here/check-secrets.sh" minio-init MINIO_ROOT_USER:3 MINIO_ROOT_PASSWORD:32 \
  S3_AIRFLOW_SECRET_KEY:32 S3_MLFLOW_SECRET_KEY:32 S3_SERVING_SECRET_KEY:32 S3_FEAST_SECRET_KEY:32

mc alias set lake http://minio:9000 "$MINIO_ROOT_USER" "$MINIO_ROOT_PASSWORD" >/dev/null
mc mb --ignore-existing lake/flywheel

user() {  # user NAME SECRET_VARIABLE: the S3 access key NAME, its secret, its policy
  name=$1
  eval "secret=\${$2}"
  if [ "$name" = "$MINIO_ROOT_USER" ]; then
    echo "minio-init: MINIO_ROOT_USER must differ from the service user $name" >&2
    exit 1
  fi
  mc admin user add lake "$name" "$secret" >/dev/null
  mc admin policy create lake "$name" "$here/minio/$name.json" >/dev/null
  if ! out=$(mc admin policy attach lake "$name" --user "$name" 2>&1); then
    case $out in
      *already*) ;;  # attached by an earlier run
      *) echo "minio-init: attaching policy $name: $out" >&2; exit 1 ;;
    esac
  fi
  echo "minio-init: user $name, policy deploy/minio/$name.json"
}
user flywheel-airflow S3_AIRFLOW_SECRET_KEY
user flywheel-mlflow S3_MLFLOW_SECRET_KEY
user flywheel-serving S3_SERVING_SECRET_KEY
user flywheel-feast S3_FEAST_SECRET_KEY
