#!/usr/bin/env bash
# Builds netstall's container image, offline, with Debian's podman:
# localhost/netstall:VERSION and localhost/netstall:latest, FROM scratch with
# the stripped release binary and the glibc libraries it links (libelf and
# zlib are static). Prints one JSON line with the image, its size and its tags.
#
#   scripts/build-image.sh                     # cargo build --profile release-lto, then the image
#   scripts/build-image.sh --binary PATH       # an already built netstall binary
#   scripts/build-image.sh --tag 0.1.0-dev     # another tag than the binary's version (and :latest)
#   scripts/build-image.sh --name registry.example/netstall   # another repository name
#
# Needs podman (scripts/setup.sh installs it). See docs/image.md.
set -euo pipefail
cd "$(dirname "$0")/.."
export PATH="$HOME/.cargo/bin:$PATH"

binary=""
profile="release-lto"
name="localhost/netstall"
tag=""
latest=1
while [ $# -gt 0 ]; do
  case "$1" in
    --binary) binary="${2:?--binary wants a path}"; shift 2 ;;
    --profile) profile="${2:?--profile wants a cargo profile}"; shift 2 ;;
    --name) name="${2:?--name wants an image name}"; shift 2 ;;
    --tag) tag="${2:?--tag wants a tag}"; shift 2 ;;
    --no-latest) latest=0; shift ;;
    -h|--help) sed -n '2,13p' "$0" | sed 's/^# \{0,1\}//'; exit 0 ;;
    *) echo "build-image: unknown argument '$1' (see --help)" >&2; exit 2 ;;
  esac
done

if ! command -v podman >/dev/null; then
  echo "build-image: podman is not installed (scripts/setup.sh installs it)" >&2
  exit 2
fi

revision="$(git rev-parse --short HEAD 2>/dev/null || echo unknown)"
if [ -n "$(git status --porcelain --untracked-files=no 2>/dev/null)" ]; then
  revision="$revision-dirty"
fi
if [ -z "$binary" ]; then
  # The agent's netstall_build_info{revision} says the same as the image's label.
  NETSTALL_REVISION="$revision" nice -n 10 cargo build --quiet --profile "$profile" -p netstall --bin netstall
  binary="target/$profile/netstall"
fi
if [ ! -x "$binary" ]; then
  echo "build-image: no executable at $binary" >&2
  exit 2
fi

version="$("$binary" --version | awk '{print $2}')"
tag="${tag:-$version}"
created="$(date -u +%Y-%m-%dT%H:%M:%SZ)"

context="$(mktemp -d /tmp/netstall-image.XXXXXX)"
trap 'rm -rf "$context"' EXIT
rootfs="$context/rootfs"
mkdir -p "$rootfs/usr/local/bin" "$rootfs/tmp"
chmod 1777 "$rootfs/tmp"
strip --strip-all -o "$rootfs/usr/local/bin/netstall" "$binary"

# Exactly the libraries the dynamic loader would load, at the same paths.
# libelf/zlib must not be among them: node-problem-detector's image and
# minimal hosts do not have them (crates/netstall/Cargo.toml links them in).
libraries="$(ldd "$binary" | awk '$2 == "=>" && $3 ~ /^\// {print $3} $1 ~ /^\// {print $1}')"
for lib in $libraries; do
  case "$(basename "$lib")" in
    libelf*|libz.*)
      echo "build-image: $binary links $(basename "$lib") dynamically; it must be static (libbpf-sys static-libelf, static-zlib)" >&2
      exit 2 ;;
  esac
  mkdir -p "$rootfs$(dirname "$lib")"
  cp -L "$lib" "$rootfs$lib"
done

tags=(--tag "$name:$tag")
[ "$latest" = 1 ] && tags+=(--tag "$name:latest")
# No RUN step: nothing executes during the build (no network, no runtime),
# and it takes a second or two, so there is nothing worth caching: without
# intermediate images (--layers=false), removing the image leaves nothing.
podman build --quiet --layers=false --file deploy/image/Containerfile \
  --build-arg VERSION="$version" --build-arg REVISION="$revision" --build-arg CREATED="$created" \
  "${tags[@]}" "$context" >/dev/null
size="$(podman image inspect --format '{{.Size}}' "$name:$tag")"
libs_json="$(printf '%s\n' $libraries | jq -R . | jq -sc .)"
printf '{"type":"image","image":"%s","version":"%s","size_bytes":%s,"size_mb":%.1f,"libraries":%s}\n' \
  "$name:$tag" "$version" "$size" "$(awk -v s="$size" 'BEGIN {print s / 1048576}')" "$libs_json"
