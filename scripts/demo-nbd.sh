#!/bin/sh
# npm run demo:nbd: the NBD server on its own, end to end on one machine.
# Makes a small demo disk image, serves it over NBD with
# `stiefelctl nbd-serve`, looks at it with nbdinfo (a client nobody here
# wrote), copies it back through the server, and stops the server cleanly.
set -eu
cd "$(dirname "$0")/.."

if [ -t 1 ]; then B=$(printf '\033[1m'); N=$(printf '\033[0m'); else B=''; N=''; fi
say() { printf '\n%s==> %s%s\n' "$B" "$*" "$N"; }
run() { printf '$ %s\n' "$*"; "$@"; }

say "Installing what the demo needs (Debian packages, npm dependencies) and building stiefelctl"
scripts/setup.sh
npm run build --silent

work=$(mktemp -d /tmp/stf2-demo-XXXXXX)
server_pid=''
cleanup() {
  if [ -n "$server_pid" ] && kill -0 "$server_pid" 2>/dev/null; then kill -TERM "$server_pid" 2>/dev/null || true; fi
  rm -rf "$work"
}
trap cleanup EXIT INT TERM

say "Making a 256 MiB demo disk: an ext4 file system with a few files; the rest is holes"
mkdir -p "$work/root/etc" "$work/root/home/demo"
echo "stiefel-demo" > "$work/root/etc/hostname"
echo "Hello from a disk served over NBD by stiefelsystem." > "$work/root/home/demo/README"
head -c 3000000 /dev/urandom > "$work/root/home/demo/random.bin"
run mke2fs -q -F -t ext4 -L stiefel-demo -d "$work/root" "$work/demo.img" 256M
ls -ls "$work/demo.img"

say "Serving it: stiefelctl nbd-serve demo.img --name demo (on a free port of 127.0.0.1)"
node dist/stiefelctl.js nbd-serve "$work/demo.img" --name demo --listen 127.0.0.1:0 2> "$work/server.log" &
server_pid=$!
uri=''
for _ in $(seq 1 100); do
  uri=$(sed -n 's/.*try: nbdinfo \(nbd:[^ ]*\).*/\1/p' "$work/server.log")
  [ -n "$uri" ] && break
  if ! kill -0 "$server_pid" 2>/dev/null; then cat "$work/server.log" >&2; exit 1; fi
  sleep 0.1
done
[ -n "$uri" ] || { echo "demo: the server did not start" >&2; cat "$work/server.log" >&2; exit 1; }
sed 's/^/  server: /' "$work/server.log"

say "nbdinfo: what the server offers (size, flags, block sizes, metadata contexts)"
run nbdinfo "$uri"

say "nbdinfo --list: the exports on this server"
run nbdinfo --list "${uri%/demo}/"

say "nbdinfo --map: which parts of the disk hold data (type 0) and which are holes (type 3)"
run nbdinfo --map "$uri"
run nbdinfo --map --totals "$uri"

say "nbdcopy: copy the whole disk back through the server and compare checksums"
run nbdcopy "$uri" "$work/copy.img"
a=$(sha256sum < "$work/demo.img" | cut -d' ' -f1)
b=$(sha256sum < "$work/copy.img" | cut -d' ' -f1)
echo "  original: $a"
echo "  copy:     $b"
[ "$a" = "$b" ] || { echo "demo: the copy differs!" >&2; exit 1; }
echo "  identical."

say "Stopping the server as Ctrl-C would (SIGINT): in-flight requests finish, then it exits"
kill -INT "$server_pid"
wait "$server_pid" && status=0 || status=$?
server_pid=''
# What the server said while the demo ran (its first lines were shown above).
tail -n +4 "$work/server.log" | sed 's/^/  server: /'
[ "$status" -eq 0 ] || { echo "demo: the server exited with status $status" >&2; exit 1; }

say "Done. Serve your own image with: node dist/stiefelctl.js nbd-serve IMAGE   (see --help)"
