#!/usr/bin/env bash
# Builds the images the cluster test runs, with podman, and saves them as archives for containerd:
#
#   contact-operator, contact-runtime  from operator/Dockerfile and tenant-runtime/Dockerfile, the
#                                      public build, with local images as their build arguments
#   pause                              FROM scratch, the pause binary of cluster/build-binaries.sh
#
# No registry is reachable, so the Dockerfiles' public bases (rust, distroless) are replaced by
# local ones, made once and kept in podman's storage:
#   localhost/contact-base/runtime:bookworm  Debian minbase (debootstrap) + CA certificates + tzdata
#   localhost/contact-base/builder:bookworm  that + gcc and libc6-dev; the host's Rust toolchain and
#                                            cargo registry are mounted into the build, and the
#                                            Dockerfiles' cache mount keeps the target folder between
#                                            builds, so a warm rebuild is incremental.
#
#   build-images.sh OUT_DIR   writes OUT_DIR/{pause,contact-operator,contact-runtime}.tar and
#                             OUT_DIR/images.txt (name, size in bytes, build seconds; one a line)
set -euo pipefail
cd "$(dirname "$0")/../.."
OUT="$1"
TAG="${CONTACT_IMAGE_TAG:-dev}"
SUITE=bookworm
MIRROR="${DEBIAN_MIRROR:-http://deb.debian.org/debian}"
mkdir -p "$OUT"
for tool in podman debootstrap; do
  command -v "$tool" >/dev/null || { echo "build-images.sh needs $tool (.ci/run installs it)" >&2; exit 1; }
done
# The machines are cgroup v1 (hybrid): crun refuses it, runc works. Builds use the host's network
# namespace (no bridge, so no addresses outside loopback) and the host's own limits (a container
# here cannot raise rlimits; root is not held to RLIMIT_NPROC, so 1024 only has to be settable).
PODMAN=(podman --runtime runc)
# --no-cache: the cargo step must always run (cargo itself decides what changed, the target
# folder is a cache mount); a layer cache hit on `COPY . .` would ship a stale binary.
BUILD=(build --no-cache --network host --ulimit "nofile=$(ulimit -Hn):$(ulimit -Hn)" --ulimit nproc=1024:1024)
BASE_RUNTIME=localhost/contact-base/runtime:$SUITE
BASE_BUILDER=localhost/contact-base/builder:$SUITE-r2

# One builder at a time on this machine (bases are shared, builds fill the same cache mounts).
LOCK="${CONTACT_TESTBIN_CACHE:-${XDG_CACHE_HOME:-$HOME/.cache}/contact-testbin}/images.lock"
mkdir -p "$(dirname "$LOCK")"
exec 9>"$LOCK"
flock 9

: > "$OUT/images.txt.tmp"
record() { # record NAME SECONDS
  local size
  size="$("${PODMAN[@]}" image inspect --format '{{.Size}}' "$1")"
  echo "$1 $size $2" >> "$OUT/images.txt.tmp"
}

if ! "${PODMAN[@]}" image exists "$BASE_RUNTIME"; then
  start=$SECONDS
  root="$(mktemp -d /var/tmp/contact-minbase.XXXXXX)"
  trap 'rm -rf "$root"' EXIT
  debootstrap --variant=minbase --include=ca-certificates,tzdata "$SUITE" "$root" "$MIRROR" >&2
  rm -rf "$root"/var/cache/apt/archives/*.deb "$root"/var/lib/apt/lists/*
  tar -C "$root" -c . | "${PODMAN[@]}" import --change 'ENV PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin' - "$BASE_RUNTIME" >&2
  rm -rf "$root"
  trap - EXIT
  echo "base $BASE_RUNTIME made in $((SECONDS - start)) s" >&2
fi
if ! "${PODMAN[@]}" image exists "$BASE_BUILDER"; then
  "${PODMAN[@]}" "${BUILD[@]}" -t "$BASE_BUILDER" -f - . >&2 <<DOCKERFILE
FROM $BASE_RUNTIME
RUN apt-get update -qq && apt-get install -y -qq --no-install-recommends gcc libc6-dev >/dev/null \
 && rm -rf /var/lib/apt/lists/*
# The host's toolchain is mounted at /usr/local/rust and its cargo registry at /cargo/registry
# (fetched on the host first: builds here are offline, the registry need not be reachable from a
# container).
ENV CARGO_HOME=/cargo CARGO_NET_OFFLINE=true PATH=/usr/local/rust/bin:/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin
DOCKERFILE
fi

toolchain="$(rustc --print sysroot)"
registry="${CARGO_HOME:-$HOME/.cargo}/registry"
cargo fetch --locked >&2
for image in contact-operator:operator contact-runtime:tenant-runtime; do
  name="${image%%:*}" dir="${image#*:}"
  start=$SECONDS
  "${PODMAN[@]}" "${BUILD[@]}" -t "localhost/$name:$TAG" -f "$dir/Dockerfile" \
    --build-arg "BUILDER_IMAGE=$BASE_BUILDER" --build-arg "RUNTIME_BASE=$BASE_RUNTIME" \
    -v "$toolchain:/usr/local/rust:ro" -v "$registry:/cargo/registry" . >&2
  record "localhost/$name:$TAG" $((SECONDS - start))
  rm -f "$OUT/$name.tar"
  "${PODMAN[@]}" save -q -o "$OUT/$name.tar" "localhost/$name:$TAG"
done
# pause: the sandbox image of every pod (last: its binary comes from the Go build).
bins="$(bash tests/cluster/build-binaries.sh)"
ctx="$(mktemp -d)"
cp "$bins/pause" "$ctx/pause"
printf 'FROM scratch\nCOPY pause /pause\nUSER 65535:65535\nENTRYPOINT ["/pause"]\n' > "$ctx/Dockerfile"
start=$SECONDS
"${PODMAN[@]}" "${BUILD[@]}" -q -t "localhost/pause:contact" "$ctx" >&2
rm -rf "$ctx"
record localhost/pause:contact $((SECONDS - start))
rm -f "$OUT/pause.tar"
"${PODMAN[@]}" save -q -o "$OUT/pause.tar" localhost/pause:contact

# Dangling layers of earlier builds would otherwise pile up in podman's storage.
"${PODMAN[@]}" image prune -f >/dev/null
mv "$OUT/images.txt.tmp" "$OUT/images.txt"
cat "$OUT/images.txt" >&2
echo "$OUT"
