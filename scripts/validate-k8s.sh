#!/usr/bin/env bash
# Checks the Kubernetes manifests against the Kubernetes API's own schemas, offline: no cluster,
# no network once installed. kubernetes-validate (PyPI) carries the schemas of every release it
# knows; each document is checked in strict mode against the oldest and the newest release
# pinned below, so a misspelt or unknown field, a wrong type, a missing required field or a
# field newer than the oldest release fails. So does a kind the schemas do not have (the tool
# only warns about one; every manifest here is a built-in kind, so it is a typo).
#
#   scripts/validate-k8s.sh [PATH...]     (default deploy/kubernetes; a directory means every
#                                          .yaml and .yml file under it)
#
# What it does not check is what only an API server does: values (completionMode: Indexd is a
# string, as far as the schema knows), limits below requests, completions missing beside
# completionMode: Indexed. `kubectl apply --dry-run=server -f FILE` checks those, with a cluster.
#
# Like .ci/run it installs what it needs itself on a machine that has only the Rust toolchain:
# python3 and its venv module with apt-get when missing (as root), then a virtual environment
# with the pinned packages under ${XDG_CACHE_HOME:-~/.cache}/echolab/k8s-venv, kept between
# runs and rebuilt when the pins change. Exit status 0 valid, 1 invalid, 2 could not check.
set -euo pipefail

root=$(cd "$(dirname "$0")/.." && pwd)

# The validator and everything it imports, pinned: one set of schemas and one set of rules on
# every machine. kubernetes-validate's version is the newest Kubernetes release it has schemas for.
pins=(
  kubernetes-validate==1.37.0
  jsonschema==4.26.0 jsonschema-specifications==2025.9.1 referencing==0.37.0 rpds-py==2026.9.1
  attrs==26.1.0 PyYAML==6.0.4 packaging==26.4 importlib-resources==7.1.0 typing-extensions==4.16.0
)
# The releases checked against: the newest the validator knows, and an older one still run by
# managed clusters, so the manifest is not quietly tied to the newest release.
versions=(1.31.0 1.37.0)

venv=${XDG_CACHE_HOME:-$HOME/.cache}/echolab/k8s-venv

if [ $# -gt 0 ]; then
  targets=("$@")
else
  cd "$root"
  targets=(deploy/kubernetes)
fi

files=()
for t in "${targets[@]}"; do
  if [ -d "$t" ]; then
    while IFS= read -r f; do files+=("$f"); done \
      < <(find "$t" -type f \( -name '*.yaml' -o -name '*.yml' \) | sort)
  elif [ -f "$t" ]; then
    files+=("$t")
  else
    echo "validate-k8s: $t: no such file or directory" >&2
    exit 2
  fi
done
if [ ${#files[@]} -eq 0 ]; then
  echo "validate-k8s: no .yaml or .yml files in ${targets[*]}" >&2
  exit 2
fi

# python3 with venv and ensurepip (Debian ships those two in python3-venv, apart from python3).
has_python() { command -v python3 >/dev/null 2>&1 && python3 -c 'import venv, ensurepip' 2>/dev/null; }
if ! has_python; then
  if [ "$(id -u)" -ne 0 ] || ! command -v apt-get >/dev/null 2>&1; then
    echo "validate-k8s: needs python3 with its venv module (Debian: apt-get install python3 python3-venv)" >&2
    exit 2
  fi
  echo "   installing python3 python3-venv"
  log=$(mktemp)
  if ! (apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq python3 python3-venv) \
    >"$log" 2>&1; then
    tail -20 "$log" >&2
    echo "validate-k8s: could not install python3 python3-venv" >&2
    exit 2
  fi
  rm -f "$log"
  has_python || { echo "validate-k8s: python3 still lacks venv after apt-get" >&2; exit 2; }
fi

# The venv, made anew unless it holds exactly these pins (a stamp written last, so a half-done
# install is redone too).
stamp="$venv/echolab-pins.txt"
if [ "$(cat "$stamp" 2>/dev/null)" != "${pins[*]}" ]; then
  echo "   installing ${pins[0]} into $venv"
  rm -rf "$venv"
  mkdir -p "$(dirname "$venv")"
  log=$(mktemp)
  if ! (python3 -m venv "$venv" &&
    PIP_DISABLE_PIP_VERSION_CHECK=1 "$venv/bin/pip" install --quiet "${pins[@]}") >"$log" 2>&1; then
    tail -20 "$log" >&2
    echo "validate-k8s: could not install ${pins[*]}" >&2
    exit 2
  fi
  rm -f "$log"
  echo "${pins[*]}" >"$stamp"
fi

kflags=()
for v in "${versions[@]}"; do kflags+=(-k "$v"); done
rc=0
out=$("$venv/bin/kubernetes-validate" --strict --quiet "${kflags[@]}" "${files[@]}" 2>&1) || rc=$?
if [ $rc -ne 0 ] || grep -q '^WARN' <<<"$out"; then
  # --quiet leaves only errors and warnings; a warning is a kind it has no schema for.
  echo "$out" >&2
  echo "validate-k8s: FAILED (strict, Kubernetes ${versions[*]}): ${files[*]}" >&2
  exit 1
fi
[ -z "$out" ] || echo "$out"
echo "   ${#files[@]} file(s) valid (strict, Kubernetes ${versions[*]}): ${files[*]}"
