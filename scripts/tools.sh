# Pinned tools (kind, kubectl): use the ones on the PATH when they are recent enough, else install the
# pinned release into .tools/bin, verified against the SHA-256 in scripts/tools.lock for this OS and
# architecture. Offline, say exactly which files to fetch and where to put them. Sourced after
# lib.sh, never run.
#   TOOLS_DIR   where tools are installed (default .tools/bin, ignored by git)
#   TOOLS_LOCK  the pins (default scripts/tools.lock)
# shellcheck shell=bash

TOOLS_DIR=${TOOLS_DIR:-$ROOT/.tools/bin}
TOOLS_LOCK=${TOOLS_LOCK:-$ROOT/scripts/tools.lock}

# "os arch" of this machine, as release assets name them.
tools_platform() {
  local os arch
  case "$(uname -s)" in
    Linux) os=linux ;;
    Darwin) os=darwin ;;
    *) os=$(uname -s) ;;
  esac
  case "$(uname -m)" in
    x86_64 | amd64) arch=amd64 ;;
    aarch64 | arm64) arch=arm64 ;;
    *) arch=$(uname -m) ;;
  esac
  echo "$os $arch"
}

# lock_entry TOOL → "version min sha256 url" for this platform (empty when not pinned for it)
lock_entry() {
  local tool=$1 os arch
  read -r os arch <<<"$(tools_platform)"
  awk -v t="$tool" -v o="$os" -v a="$arch" '$1 == t && $4 == o && $5 == a { print $2, $3, $6, $7; exit }' "$TOOLS_LOCK"
}

# version_of BINARY TOOL → the first vX.Y.Z it reports (kubectl: the client's)
version_of() {
  local out
  case "$2" in
    kubectl) out=$("$1" version --client 2>/dev/null) ;;
    *) out=$("$1" version 2>/dev/null) ;;
  esac
  grep -oE 'v[0-9]+\.[0-9]+\.[0-9]+' <<<"$out" | head -n 1
}

# version_ge A B: A >= B (vX.Y.Z)
version_ge() {
  local a b i
  IFS=. read -r -a a <<<"${1#v}"
  IFS=. read -r -a b <<<"${2#v}"
  for i in 0 1 2; do
    if ((${a[i]:-0} != ${b[i]:-0})); then
      ((${a[i]:-0} > ${b[i]:-0}))
      return
    fi
  done
  return 0
}

sha256_of() {
  if command -v sha256sum >/dev/null 2>&1; then
    sha256sum "$1" | awk '{print $1}'
  else
    shasum -a 256 "$1" | awk '{print $1}'
  fi
}

# ensure_tool TOOL: after it, TOOL on the PATH is the pinned one or a recent enough one.
ensure_tool() {
  local tool=$1 entry version min sha url found have got os arch rc
  entry=$(lock_entry "$tool")
  read -r os arch <<<"$(tools_platform)"
  if [ -z "$entry" ]; then
    found=$(command -v "$tool" 2>/dev/null) || die "$tool is not installed and has no pinned download for $os/$arch (pinned: linux and darwin on amd64 and arm64). Install $tool yourself and put it on the PATH."
    info "$tool: using $found (no pin for $os/$arch)"
    return 0
  fi
  read -r version min sha url <<<"$entry"
  # 1. Installed here before (or put here by hand) and intact.
  if [ -x "$TOOLS_DIR/$tool" ] && [ "$(sha256_of "$TOOLS_DIR/$tool")" = "$sha" ]; then
    PATH="$TOOLS_DIR:$PATH"
    export PATH
    info "$tool: $version from $TOOLS_DIR (checksum verified)"
    return 0
  fi
  # 2. On the PATH and recent enough.
  if found=$(command -v "$tool" 2>/dev/null) && [ "$found" != "$TOOLS_DIR/$tool" ]; then
    have=$(version_of "$found" "$tool")
    if [ -n "$have" ] && version_ge "$have" "$min"; then
      info "$tool: using $found ($have; the walkthrough pins $version, accepts $min or newer)"
      return 0
    fi
    info "$tool: $found is ${have:-of unknown version}, older than $min: installing the pinned $version"
  fi
  # 3. Download, verify, install.
  mkdir -p "$TOOLS_DIR"
  local tmp="$TOOLS_DIR/.$tool.download"
  rm -f "$tmp"
  info "$tool: downloading $version for $os/$arch from $url"
  rc=0
  curl -fsSL --retry 2 --connect-timeout 10 --max-time 300 -o "$tmp" "$url" 2>"$tmp.err" || rc=$?
  if [ "$rc" -ne 0 ]; then
    local why
    why=$(tr '\n' ' ' <"$tmp.err")
    rm -f "$tmp" "$tmp.err"
    if [ "$rc" -eq 22 ]; then
      die "$tool: $url answered with an HTTP error (${why:-curl exit 22}); the pinned release should exist there, check a proxy or mirror"
    fi
    die "$tool: cannot download $url (${why:-curl exit $rc}). Offline? On a connected machine fetch
      $url
    (SHA-256 $sha), then put it here and run again:
      $TOOLS_DIR/$tool
    or install $tool $min or newer on the PATH."
  fi
  rm -f "$tmp.err"
  got=$(sha256_of "$tmp")
  if [ "$got" != "$sha" ]; then
    rm -f "$tmp"
    die "$tool: checksum mismatch for $url: expected $sha, got $got. The download is corrupt or not the official $version release; nothing was installed."
  fi
  chmod +x "$tmp"
  mv -f "$tmp" "$TOOLS_DIR/$tool"
  PATH="$TOOLS_DIR:$PATH"
  export PATH
  info "$tool: $version installed in $TOOLS_DIR (checksum verified)"
}

# A real kube-apiserver and etcd for the tests and benchmarks (kubebuilder's envtest layout), into
# target/envtest, and KUBEBUILDER_ASSETS exported to name it. From, in order: KUBEBUILDER_ASSETS
# already holding both binaries; a local archive ENVTEST_ARCHIVE (with a SHA256SUMS beside it, as an
# air-gapped site keeps one); the pinned envtest release of scripts/envtest.lock (SHA-512 of
# kubernetes-sigs/controller-tools' envtest-releases.yaml). Returns 1, saying why, when none works.
ensure_envtest() {
  local dir="$ROOT/target/envtest" os arch entry version sha url archive got
  if [ -n "${KUBEBUILDER_ASSETS:-}" ] && [ -x "$KUBEBUILDER_ASSETS/kube-apiserver" ] && [ -x "$KUBEBUILDER_ASSETS/etcd" ]; then
    info "envtest: using KUBEBUILDER_ASSETS=$KUBEBUILDER_ASSETS"
    return 0
  fi
  if [ -x "$dir/kube-apiserver" ] && [ -x "$dir/etcd" ]; then
    export KUBEBUILDER_ASSETS="$dir"
    info "envtest: using $dir"
    return 0
  fi
  mkdir -p "$dir"
  if [ -n "${ENVTEST_ARCHIVE:-}" ]; then
    [ -f "$ENVTEST_ARCHIVE" ] || { info "envtest: ENVTEST_ARCHIVE=$ENVTEST_ARCHIVE does not exist"; return 1; }
    local sums
    sums="$(dirname "$ENVTEST_ARCHIVE")/SHA256SUMS"
    if [ -f "$sums" ]; then
      got=$(sha256_of "$ENVTEST_ARCHIVE")
      grep -q "^$got  $(basename "$ENVTEST_ARCHIVE")\$" "$sums" || { info "envtest: $ENVTEST_ARCHIVE does not match $sums"; return 1; }
    fi
    tar -xf "$ENVTEST_ARCHIVE" -C "$dir" || { info "envtest: cannot unpack $ENVTEST_ARCHIVE"; return 1; }
  else
    read -r os arch <<<"$(tools_platform)"
    entry=$(awk -v o="$os" -v a="$arch" '$1 == "envtest" && $3 == o && $4 == a { print $2, $5, $6; exit }' "$ROOT/scripts/envtest.lock")
    [ -n "$entry" ] || { info "envtest: no pinned release for $os/$arch"; return 1; }
    read -r version sha url <<<"$entry"
    archive="$ROOT/.tools/$(basename "$url")"
    mkdir -p "$ROOT/.tools"
    if [ ! -f "$archive" ]; then
      info "envtest: downloading $version for $os/$arch from $url"
      curl -fsSL --retry 2 --connect-timeout 10 --max-time 600 -o "$archive.part" "$url" 2>/dev/null \
        || { rm -f "$archive.part"; info "envtest: cannot download $url (offline?); put it at $archive, or set ENVTEST_ARCHIVE or KUBEBUILDER_ASSETS"; return 1; }
      mv "$archive.part" "$archive"
    fi
    if command -v sha512sum >/dev/null 2>&1; then got=$(sha512sum "$archive" | awk '{print $1}'); else got=$(shasum -a 512 "$archive" | awk '{print $1}'); fi
    [ "$got" = "$sha" ] || { rm -f "$archive"; info "envtest: checksum mismatch for $url (expected SHA-512 $sha, got $got): removed"; return 1; }
    # The release holds controller-tools/envtest/{etcd,kube-apiserver,kubectl}.
    tar -xzf "$archive" -C "$dir" --strip-components=2 || { info "envtest: cannot unpack $archive"; return 1; }
  fi
  [ -x "$dir/kube-apiserver" ] && [ -x "$dir/etcd" ] || { info "envtest: the archive holds no kube-apiserver and etcd"; rm -rf "$dir"; return 1; }
  export KUBEBUILDER_ASSETS="$dir"
  info "envtest: $("$dir/kube-apiserver" --version 2>/dev/null || echo kube-apiserver), etcd $("$dir/etcd" --version 2>/dev/null | awk '/etcd Version/ {print $3}') in $dir"
}
