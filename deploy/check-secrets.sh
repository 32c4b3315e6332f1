#!/bin/sh
# Refuse unusable secrets before anything starts (airflow-init, minio-init; the MLflow launcher
# checks its own in deploy/mlflow_server.py).
#
#   check-secrets.sh WHO NAME:MIN[:url] ...
#
# Each NAME is read from the environment and must be set, must not be a placeholder (contain
# "change-me", "changeme" or "placeholder", any case) and must have at least MIN characters;
# with ":url" it may hold only URL-safe characters (A-Z a-z 0-9 . _ ~ -): it travels inside URLs.
# Messages name the variable, never its value; exit 1 after listing every problem.
# Shell built-ins only: it also runs in the minio/mc image, which has no grep or tr.
set -u
who=$1
shift
bad=0
for spec in "$@"; do
  name=${spec%%:*}
  rest=${spec#*:}
  min=${rest%%:*}
  mode=
  [ "$rest" != "$min" ] && mode=${rest#*:}
  case $name in
    '' | *[!A-Za-z0-9_]*) echo "$who: bad variable name in check-secrets: $name" >&2; exit 2 ;;
  esac
  eval "value=\${$name:-}"
  problem=
  case $value in
    '') problem="is not set: put a real value in .env (see .env.example)" ;;
    *[Cc][Hh][Aa][Nn][Gg][Ee]-[Mm][Ee]* | *[Cc][Hh][Aa][Nn][Gg][Ee][Mm][Ee]* | \
      *[Pp][Ll][Aa][Cc][Ee][Hh][Oo][Ll][Dd][Ee][Rr]*)
      problem="is still a placeholder: put a real value in .env" ;;
  esac
  if [ -z "$problem" ] && [ "${#value}" -lt "$min" ]; then
    problem="has ${#value} characters, needs at least $min"
    problem="$problem (python -c 'import secrets; print(secrets.token_urlsafe(32))')"
  fi
  if [ -z "$problem" ] && [ "$mode" = url ]; then
    case $value in
      *[!A-Za-z0-9._~-]*) problem="may hold only A-Z a-z 0-9 . _ ~ - (it is used inside URLs)" ;;
    esac
  fi
  if [ -n "$problem" ]; then
    echo "$who: $name $problem" >&2
    bad=1
  fi
done
[ "$bad" -eq 0 ] || exit 1
echo "$who: secrets checked"
