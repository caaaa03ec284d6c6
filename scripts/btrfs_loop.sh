#!/usr/bin/env bash
# A btrfs filesystem on a loop device, for tests of the btrfs storage backend:
#   scripts/btrfs_loop.sh up DIR [SIZE]   makes DIR/btrfs.img (default 1G), mounts it on DIR/mnt,
#                                          prints the mount point
#   scripts/btrfs_loop.sh down DIR        unmounts it (the loop device goes with it), removes DIR
# Needs root, the kernel's btrfs and loop support, and btrfs-progs (scripts/setup.sh).
set -euo pipefail
cmd=${1:?usage: btrfs_loop.sh up|down DIR [SIZE]}
dir=${2:?usage: btrfs_loop.sh up|down DIR [SIZE]}
case "$cmd" in
  up)
    size=${3:-1G}
    mkdir -p "$dir/mnt"
    truncate -s "$size" "$dir/btrfs.img"
    mkfs.btrfs -q "$dir/btrfs.img" >/dev/null
    mount -o loop "$dir/btrfs.img" "$dir/mnt"
    echo "$dir/mnt"
    ;;
  down)
    if mountpoint -q "$dir/mnt"; then umount "$dir/mnt"; fi
    # Anything mounted below DIR by a pool (loop-backed pools the test made) goes too.
    { grep -F " $dir/" /proc/self/mounts || true; } | awk '{print $2}' | sort -r | while read -r m; do
      umount "$m" || true
    done
    rm -rf "$dir"
    ;;
  *)
    echo "usage: btrfs_loop.sh up|down DIR [SIZE]" >&2
    exit 2
    ;;
esac
