#!/usr/bin/env bash
# Builds target/debian/vztmpld_*.deb: the release binary (/usr/bin/vztmpld), the systemd unit, the sysusers file,
# the example configuration (/etc/vztmpld/config.yaml, a conffile), the man page and bash/zsh/fish completions.
# Needs cargo-deb (`cargo install cargo-deb --locked`). Lists the package's files at the end.
set -euo pipefail
cd "$(dirname "$0")/.."
command -v cargo-deb >/dev/null || { echo "cargo-deb is not installed: cargo install cargo-deb --locked" >&2; exit 1; }
cargo build --release --locked
assets=target/deb-assets
mkdir -p "$assets"
bin=target/release/vztmpld
"$bin" man | gzip -9n > "$assets/vztmpld.1.gz"
"$bin" completions bash > "$assets/vztmpld.bash"
"$bin" completions zsh > "$assets/_vztmpld"
"$bin" completions fish > "$assets/vztmpld.fish"
# The packaged binary lives in /usr/bin; the unit in deploy/ is for a manual install in /usr/local/bin.
sed 's#/usr/local/bin/vztmpld#/usr/bin/vztmpld#g' deploy/vztmpld.service > "$assets/vztmpld.service"
cargo deb --no-build --locked
deb=$(ls -t target/debian/vztmpld_*.deb | head -n1)
echo "$deb"
dpkg-deb -c "$deb"
