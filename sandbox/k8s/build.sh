#!/usr/bin/env bash
# Build the upstream Kubernetes control plane (kube-apiserver,
# kube-controller-manager, kube-scheduler, kubectl) and etcd from Go modules,
# at the versions pinned in sandbox/k8s/go.mod + go.sum, for the test sandbox.
#
# Usage:
#   sandbox/k8s/build.sh            build what is missing or stale (idempotent)
#   sandbox/k8s/build.sh --check    only report; exit 0 if all up to date, 1 if not
#   sandbox/k8s/build.sh --force    rebuild everything
#   sandbox/k8s/build.sh NAME...    limit to some of: kube-apiserver
#                                   kube-controller-manager kube-scheduler kubectl etcd
#
# Output: <repo>/.cache/k8s/bin/<name> (override with KOVN_K8S_BIN_DIR).
# A binary is up to date when it exists and its stamp (.stamps/<name>) records
# the same pinned versions, go.mod/go.sum hashes, Go version, target platform
# and build recipe. Stale binaries are rebuilt; with a warm GOCACHE that is
# mostly just linking.
#
# Environment:
#   KOVN_K8S_BIN_DIR   output directory (default <repo>/.cache/k8s/bin)
#   KOVN_BUILD_NICE    nice level for go commands (default 15)
#   GOTOOLCHAIN        defaults to "local": never download a Go toolchain
#   GOCACHE/GOMODCACHE/GOPROXY are honoured as usual.
set -euo pipefail

here="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
root="$(cd "$here/../.." && pwd)"
out="${KOVN_K8S_BIN_DIR:-$root/.cache/k8s/bin}"
nice_level="${KOVN_BUILD_NICE:-15}"

# name -> main package (the order is the build order: biggest first, the rest
# then reuse most of its compiled packages from GOCACHE).
names=(kube-apiserver kube-controller-manager kube-scheduler kubectl etcd)
declare -A pkg=(
    [kube-apiserver]=k8s.io/kubernetes/cmd/kube-apiserver
    [kube-controller-manager]=k8s.io/kubernetes/cmd/kube-controller-manager
    [kube-scheduler]=k8s.io/kubernetes/cmd/kube-scheduler
    [kubectl]=k8s.io/kubernetes/cmd/kubectl
    [etcd]=go.etcd.io/etcd/server/v3
)

# Build recipe. Bump RECIPE when changing flags in a way the stamp cannot see.
RECIPE=1
# Same tags as upstream's hack/lib/golang.sh for release (non-debug) builds.
TAGS="selinux,notest,grpcnotrace"
export CGO_ENABLED=0
export GOFLAGS="-trimpath -buildvcs=false -mod=readonly"
: "${GOTOOLCHAIN:=local}"
export GOTOOLCHAIN

log() { echo "build.sh: $*" >&2; }
die() { echo "build.sh: error: $*" >&2; exit 1; }

usage() { sed -n '2,/^set -euo/{/^set -euo/d;s/^# \{0,1\}//;p}' "${BASH_SOURCE[0]}"; }

mode=build
want=()
for arg in "$@"; do
    case "$arg" in
        --check) mode=check ;;
        --force) mode=force ;;
        -h|--help) usage; exit 0 ;;
        -*) die "unknown option '$arg' (try --help)" ;;
        *)
            [[ -n "${pkg[$arg]+x}" ]] || die "unknown binary '$arg' (known: ${names[*]})"
            want+=("$arg") ;;
    esac
done
(( ${#want[@]} > 0 )) || want=("${names[@]}")

# --- Go toolchain ------------------------------------------------------------
command -v go >/dev/null 2>&1 ||
    die "go not found in PATH; install Go >= $(awk '$1=="go"{print $2;exit}' "$here/go.mod") (the Kubernetes version pinned in sandbox/k8s/go.mod needs it)"
go_min="$(awk '$1 == "go" {print $2; exit}' "$here/go.mod")"
go_version="$(cd "$here" && go env GOVERSION 2>/dev/null)" ||
    die "'go env GOVERSION' failed; is the Go installation (or GOTOOLCHAIN=$GOTOOLCHAIN) usable? need Go >= $go_min"
go_num="${go_version#go}"; go_num="${go_num%%[!0-9.]*}"
if [[ -z "$go_num" ]] ||
   [[ "$(printf '%s\n%s\n' "$go_min" "$go_num" | sort -V | head -n1)" != "$go_min" ]]; then
    die "found $go_version ($(command -v go)), but the pinned Kubernetes needs Go >= $go_min; install a newer Go or export GOTOOLCHAIN=go$go_min (fetched from the Go module proxy)"
fi
goos="$(go env GOOS)"; goarch="$(go env GOARCH)"

# --- pinned versions & stamp --------------------------------------------------
modver() { awk -v m="$1" '$1 == m && $2 ~ /^v/ {print $2; exit}' "$here/go.mod"; }
k8s_version="$(modver k8s.io/kubernetes)"
etcd_version="$(modver go.etcd.io/etcd/server/v3)"
[[ "$k8s_version" =~ ^v1\.([0-9]+)\.([0-9]+)$ ]] ||
    die "cannot read k8s.io/kubernetes version from $here/go.mod (got '$k8s_version')"
k8s_minor="${BASH_REMATCH[1]}"
staging_version="v0.${BASH_REMATCH[1]}.${BASH_REMATCH[2]}"
grep -q "k8s.io/component-base => k8s.io/component-base $staging_version\$" "$here/go.mod" ||
    die "go.mod does not replace the staging modules with $staging_version; run sandbox/k8s/update-deps.sh"
[[ -n "$etcd_version" ]] || die "cannot read go.etcd.io/etcd/server/v3 version from go.mod"

sha() { sha256sum "$1" | cut -d' ' -f1; }
stamp="recipe $RECIPE tags=$TAGS cgo=$CGO_ENABLED goflags=$GOFLAGS
k8s.io/kubernetes $k8s_version
staging $staging_version
go.etcd.io/etcd/server/v3 $etcd_version
go $go_version $goos/$goarch
go.mod $(sha "$here/go.mod")
go.sum $(sha "$here/go.sum")"

stampdir="$out/.stamps"
status_of() {  # prints: ok | missing | stale
    local name="$1"
    if [[ ! -x "$out/$name" ]]; then echo missing
    elif [[ -f "$stampdir/$name" ]] && [[ "$(cat "$stampdir/$name")" == "$stamp" ]]; then echo ok
    else echo stale
    fi
}

if [[ "$mode" == check ]]; then
    rc=0
    for name in "${want[@]}"; do
        st="$(status_of "$name")"
        echo "$name: $st"
        [[ "$st" == ok ]] || rc=1
    done
    if (( rc == 0 )); then log "up to date in $out (k8s $k8s_version, etcd $etcd_version, $go_version)"
    else log "not up to date; run $here/build.sh"; fi
    exit "$rc"
fi

# --- build -------------------------------------------------------------------
mkdir -p "$out" "$stampdir"
# Serialise concurrent invocations (e.g. parallel test workers).
if command -v flock >/dev/null 2>&1; then
    exec 9>"$out/.lock"
    flock 9
fi

todo=()
for name in "${want[@]}"; do
    if [[ "$mode" == force ]] || [[ "$(status_of "$name")" != ok ]]; then
        todo+=("$name")
    else
        log "$name is up to date, skipping"
    fi
done
if (( ${#todo[@]} == 0 )); then
    log "all up to date in $out (k8s $k8s_version, etcd $etcd_version, $go_version)"
    exit 0
fi

cd "$here"
# Deterministic build date: the publication time of the pinned module.
build_date="$(nice -n "$nice_level" go list -m -f '{{.Time.UTC.Format "2006-01-02T15:04:05Z"}}' k8s.io/kubernetes)" ||
    die "cannot resolve k8s.io/kubernetes $k8s_version (is the Go module proxy reachable?)"
ldflags="-s -w"
for p in k8s.io/component-base/version k8s.io/client-go/pkg/version; do
    ldflags+=" -X $p.gitVersion=$k8s_version -X $p.gitMajor=1 -X $p.gitMinor=$k8s_minor"
    ldflags+=" -X $p.gitTreeState=clean -X $p.gitCommit= -X $p.buildDate=$build_date"
done
ldflags+=" -X go.etcd.io/etcd/api/v3/version.GitSHA=module-$etcd_version"

log "k8s $k8s_version (staging $staging_version), etcd $etcd_version, $go_version $goos/$goarch -> $out"
total_start=$SECONDS
for name in "${todo[@]}"; do
    start=$SECONDS
    tmp="$out/.$name.tmp.$$"
    trap 'rm -f "$tmp"' EXIT
    log "building $name (${pkg[$name]}) ..."
    if ! nice -n "$nice_level" go build -tags "$TAGS" -ldflags "$ldflags" -o "$tmp" "${pkg[$name]}"; then
        rm -f "$tmp"
        die "go build of $name (${pkg[$name]}) failed"
    fi
    # Sanity check before installing: the binary must run and report its version.
    case "$name" in
        kubectl) vcmd=("$tmp" version --client) ;;
        *) vcmd=("$tmp" --version) ;;
    esac
    if ! vout="$("${vcmd[@]}" 2>&1)"; then
        rm -f "$tmp"
        die "$name built but '${vcmd[*]##*/}' failed: $vout"
    fi
    rm -f "$stampdir/$name"
    mv -f "$tmp" "$out/$name"
    printf '%s\n' "$stamp" > "$stampdir/$name"
    size="$(du -m "$out/$name" | cut -f1)"
    log "built $name ... $((SECONDS - start))s, ${size} MiB: $(head -n1 <<<"$vout")"
done
trap - EXIT
log "done: ${#todo[@]} binaries in $((SECONDS - total_start))s -> $out"
