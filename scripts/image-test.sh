#!/usr/bin/env bash
# The long form of crates/netstall/tests/image.rs: builds the image that ships
# (scripts/build-image.sh: release-lto build, localhost/netstall:VERSION and
# :latest), then runs the image tests against an image of that same release
# binary instead of the test build CI uses. Root (podman, BPF). Prints the
# shipped image's size on its first line.
set -euo pipefail
cd "$(dirname "$0")/.."
export PATH="$HOME/.cargo/bin:$PATH"
scripts/build-image.sh
NETSTALL_IMAGE_BINARY="$PWD/target/release-lto/netstall" CI=true \
  nice -n 10 cargo nextest run -p netstall --test image --no-capture
