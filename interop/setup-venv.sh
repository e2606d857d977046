#!/usr/bin/env bash
# Create (if missing) the Python virtualenv holding oslo.messaging 18.3.1 used
# by the interop tests, and print the venv's python path as the LAST line of
# stdout. Everything else (venv/pip output, diagnostics) goes to stderr.
#
#   OSLO_VENV       venv location
#                   (default ${XDG_CACHE_HOME:-$HOME/.cache}/rust-messaging/oslo-venv-18.3.1)
#   PYTHON          base interpreter used to create the venv (default python3, needs >= 3.11)
#
# It also puts oslo.messaging's own load generator, tools/simulator.py and its
# tools/messages_length.yaml, in <venv>/tools/: they are in the sdist, not in the
# wheel, so the sdist is downloaded once (pip download --no-binary, hash-pinned) into
# <venv>/sdist/ and the two files extracted. Run it as
#   $PY <venv>/tools/simulator.py --url rabbit://... rpc-server
#
# Idempotent: if the venv's python can already import oslo_messaging 18.3.1 and the
# tools are there it returns immediately (~0.4 s). Concurrent invocations are
# serialised with flock.
set -euo pipefail

OSLO_MESSAGING_VERSION=18.3.1
HERE="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
CONSTRAINTS="$HERE/constraints.txt"
VENV="${OSLO_VENV:-${XDG_CACHE_HOME:-$HOME/.cache}/rust-messaging/oslo-venv-${OSLO_MESSAGING_VERSION}}"
BASE_PYTHON="${PYTHON:-python3}"
VPY="$VENV/bin/python"
TOOLS="$VENV/tools"
# sha256 of oslo_messaging-18.3.1.tar.gz on PyPI (pip checks it on download).
SDIST_SHA256=28831b36096d74da5cd1370ef25b4719aaca627d94785a67a9838a480ce7ee3a

log() { printf 'setup-venv: %s\n' "$*" >&2; }

venv_ok() {
    [ -x "$VPY" ] || return 1
    "$VPY" - "$OSLO_MESSAGING_VERSION" >/dev/null 2>&1 <<'EOF'
import sys, warnings
warnings.simplefilter("ignore")
import importlib.metadata as md
import oslo_messaging, oslo_config.cfg, oslo_context.context  # noqa: F401
sys.exit(0 if md.version("oslo.messaging") == sys.argv[1] else 1)
EOF
}

tools_ok() {
    [ -s "$TOOLS/simulator.py" ] && [ -s "$TOOLS/messages_length.yaml" ]
}

# Downloads the sdist (once) and extracts the two tool files into $TOOLS, atomically:
# $TOOLS appears complete or not at all.
fetch_tools() {
    local sdist_dir="$VENV/sdist" sdist reqs staging
    sdist="$sdist_dir/oslo_messaging-$OSLO_MESSAGING_VERSION.tar.gz"
    if [ ! -s "$sdist" ]; then
        log "downloading the oslo.messaging $OSLO_MESSAGING_VERSION sdist (for tools/simulator.py)"
        mkdir -p "$sdist_dir"
        reqs="$sdist_dir/requirements.txt"
        printf 'oslo.messaging==%s --hash=sha256:%s\n' "$OSLO_MESSAGING_VERSION" "$SDIST_SHA256" >"$reqs"
        if ! "$VPY" -m pip download --disable-pip-version-check --no-input --no-deps \
            --no-binary :all: --require-hashes -r "$reqs" -d "$sdist_dir" >&2; then
            log "could not download the oslo.messaging $OSLO_MESSAGING_VERSION sdist"
            return 1
        fi
    fi
    staging="$(mktemp -d "$VENV/.tools.XXXXXX")"
    if ! "$VPY" - "$sdist" "$staging" "oslo_messaging-$OSLO_MESSAGING_VERSION" <<'EOF'
import sys, tarfile
sdist, staging, top = sys.argv[1:]
wanted = {f"{top}/tools/simulator.py", f"{top}/tools/messages_length.yaml"}
with tarfile.open(sdist) as tar:
    members = [m for m in tar.getmembers() if m.name in wanted and m.isfile()]
    if len(members) != len(wanted):
        sys.exit(f"{sdist} lacks {sorted(wanted - {m.name for m in members})}")
    for m in members:
        # Plain files under their base names: nothing can land outside staging.
        m.name = m.name.rsplit("/", 1)[1]
        if hasattr(tarfile, "data_filter"):  # Python >= 3.11.4
            tar.extract(m, staging, filter="data")
        else:
            tar.extract(m, staging)
EOF
    then
        rm -rf "$staging"
        log "could not extract tools/ from $sdist"
        return 1
    fi
    chmod 755 "$staging"
    rm -rf "$TOOLS"
    mv "$staging" "$TOOLS"
    log "oslo's simulator: $TOOLS/simulator.py"
}

if venv_ok && tools_ok; then
    printf '%s\n' "$VPY"
    exit 0
fi

mkdir -p "$(dirname "$VENV")"

# Serialise concurrent setups (e.g. several test binaries starting at once).
if command -v flock >/dev/null 2>&1; then
    exec 9>"$VENV.lock"
    flock 9
    # Someone else may have finished the install while we waited.
    if venv_ok && tools_ok; then
        printf '%s\n' "$VPY"
        exit 0
    fi
fi

# Only the tools are missing (a venv made before they were added).
if venv_ok; then
    fetch_tools
    printf '%s\n' "$VPY"
    exit 0
fi

if ! command -v "$BASE_PYTHON" >/dev/null 2>&1; then
    log "no '$BASE_PYTHON' on PATH (set PYTHON=/path/to/python3.11+)"
    exit 1
fi
if ! "$BASE_PYTHON" -c 'import sys; sys.exit(0 if sys.version_info >= (3, 11) else 1)'; then
    log "oslo.messaging $OSLO_MESSAGING_VERSION needs Python >= 3.11; $BASE_PYTHON is $("$BASE_PYTHON" -V 2>&1)"
    exit 1
fi

start=$(date +%s)
# Anything already there failed the import check above (interrupted install,
# base python changed, damaged site-packages): rebuild it from scratch. Only
# ever delete something that is recognisably a venv.
if [ -e "$VENV" ] && [ -n "$(ls -A "$VENV" 2>/dev/null)" ]; then
    if [ ! -f "$VENV/pyvenv.cfg" ]; then
        log "$VENV exists but is not a virtualenv; refusing to touch it (set OSLO_VENV)"
        exit 1
    fi
    log "removing unusable venv at $VENV"
    rm -rf "$VENV"
fi
if [ ! -x "$VPY" ]; then
    log "creating venv at $VENV"
    if ! "$BASE_PYTHON" -m venv "$VENV" >&2; then
        log "'$BASE_PYTHON -m venv' failed (on Debian: apt-get install python3-venv)"
        rm -rf "$VENV"
        exit 1
    fi
fi

log "installing oslo.messaging==$OSLO_MESSAGING_VERSION (pinned by $CONSTRAINTS)"
"$VPY" -m pip install --disable-pip-version-check --no-input \
    -c "$CONSTRAINTS" "oslo.messaging==$OSLO_MESSAGING_VERSION" >&2

if ! venv_ok; then
    log "oslo_messaging still does not import in $VENV; output of the import:"
    "$VPY" -c 'import oslo_messaging' >&2 || true
    exit 1
fi
fetch_tools
log "ready in $(( $(date +%s) - start ))s"
printf '%s\n' "$VPY"
