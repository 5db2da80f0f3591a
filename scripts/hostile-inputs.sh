#!/usr/bin/env bash
# Hostile inputs against `vztmpld check`: each must end quickly, in bounded memory, with an error that names the
# file and the rule. Prints one line per case: seconds, peak RSS, exit status, the first line of the error.
# Usage: scripts/hostile-inputs.sh [path/to/vztmpld]   (default: target/release/vztmpld, built if missing)
set -euo pipefail
cd "$(dirname "$0")/.."
bin=${1:-target/release/vztmpld}
[ -x "$bin" ] || cargo build --release --quiet
dir=$(mktemp -d)
trap 'rm -rf "$dir"' EXIT
printf 'd6a1f0b2-1111-2222-3333-444455556666' > "$dir/s"; chmod 600 "$dir/s"
cfg_head() {
  printf 'interval: %s\nclusters:\n  - name: lab\n    endpoints: [https://127.0.0.1:8006]\n' "${1:-10m}"
  printf '    auth: {token_id: "vztmpld@pve!cache", secret_file: %s}\n    tls: {insecure: true}\n' "${2:-s}"
}
cfg_head > "$dir/zero.yaml" 10m /dev/zero; echo 'templates: [{template: alpine}]' >> "$dir/zero.yaml"
mkfifo "$dir/fifo.secret"; cfg_head 10m fifo.secret > "$dir/fifo-secret.yaml"; echo 'templates: []' >> "$dir/fifo-secret.yaml"
mkfifo "$dir/fifo.yaml"
cfg_head 1ms > "$dir/interval.yaml"; echo 'templates: [{template: alpine}]' >> "$dir/interval.yaml"
{ cfg_head; echo 'templates:'; for i in $(seq 1 80000); do echo "  - {template: alpine-3.$i}"; done; } > "$dir/80k.yaml"
{ cfg_head; echo 'templates:'; for i in $(seq 1 9000); do echo "  - {template: alpine-3.$i, clusters: [lab]}"; done; } > "$dir/9k.yaml"
{ cfg_head; echo 'templates: [{template: alpine}]'; { yes '# padding padding padding padding padding padding' || true; } | dd bs=1M count=10 iflag=fullblock 2>/dev/null; } > "$dir/10mb.yaml"
cfg_head 10m /tmp/does-not-exist > "$dir/missing.yaml"; echo 'templates: []' >> "$dir/missing.yaml"
printf '%-22s %8s %10s %5s  %s\n' case seconds max_rss_kb exit error
for case in zero fifo-secret fifo interval 80k 9k 10mb missing; do
  out=$( { /usr/bin/time -f '%e %M' timeout 30 "$bin" check -c "$dir/$case.yaml" 2>&1 >/dev/null; echo "exit=$?"; } 2>&1 )
  status=$(echo "$out" | sed -n 's/^exit=//p')
  timing=$(echo "$out" | grep -E '^[0-9.]+ [0-9]+$' | tail -1 || true)
  msg=$(echo "$out" | grep -vE '^[0-9.]+ [0-9]+$|^exit=' | head -1 | sed "s#$dir/##g" | cut -c1-110 || true)
  printf '%-22s %8s %10s %5s  %s\n' "$case" ${timing:-? ?} "$status" "$msg"
done
