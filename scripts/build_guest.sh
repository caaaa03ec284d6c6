#!/usr/bin/env bash
# Build the novactl test guest: a Debian cloud kernel plus a tiny busybox
# initramfs that runs qemu-guest-agent, reads a NoCloud "cidata" seed, prints
# NOVACTL-GUEST-READY and then a NOVACTL-COUNTER line every second.
# Other console lines tests read: NOVACTL-GUEST-RESOURCES (CPUs and MemTotal the
# guest sees), NOVACTL-USER / NOVACTL-SSH-KEY (the seed's users and keys as
# applied; user-data runcmd output follows), NOVACTL-FSFREEZE freeze|thaw (the
# agent's fsfreeze hook) and "novactl-guest: poweroff" (its own shutdown path).
#
# Everything comes from Debian packages (apt-get download + dpkg-deb -x), so
# it works on machines that can reach only the Debian mirror.
#
# Output: $NOVACTL_GUEST_DIR (default ~/.cache/novactl/guest) with vmlinuz,
# initrd.img and cmdline. The last line of stdout is always that directory.
# Rebuilds only when this script or scripts/guest/* change.
#
# Boot it with e.g.:
#   qemu-system-x86_64 -accel tcg -nodefaults -display none -m 256 \
#     -kernel vmlinuz -initrd initrd.img -append "$(cat cmdline)" -serial stdio \
#     -device virtio-serial-pci -chardev socket,id=qga0,path=qga.sock,server=on,wait=off \
#     -device virtserialport,chardev=qga0,name=org.qemu.guest_agent.0
set -euo pipefail

SCRIPT_DIR=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
GUEST_SRC=$SCRIPT_DIR/guest
OUT_DIR=${NOVACTL_GUEST_DIR:-${XDG_CACHE_HOME:-$HOME/.cache}/novactl/guest}
STAMP=$OUT_DIR/.stamp

KERNEL_META_PKG=linux-image-cloud-amd64
# Modules the guest needs; each is skipped if built in, dependencies are added.
# button+evdev: ACPI power button as an input device (for acpid).
WANTED_MODULES=(virtio_pci virtio_net virtio_blk virtio_console isofs button evdev)
# loglevel=3: errors only, so marker lines are not interleaved with kernel
# chatter; panic=-1 reboots at once (QEMU with -no-reboot then exits);
# cryptomgr.notests skips crypto self-tests (~0.3 s under TCG).
CMDLINE="console=ttyS0 panic=-1 loglevel=3 cryptomgr.notests"

log() { echo "build_guest: $*" >&2; }
die() {
	log "error: $*"
	exit 1
}

# sha256 over this script and the guest files, i.e. over the build recipe.
recipe_hash() {
	(cd "$SCRIPT_DIR" && sha256sum "$(basename "${BASH_SOURCE[0]}")" guest/*) |
		sha256sum | cut -d' ' -f1
}

is_up_to_date() {
	[[ -f $OUT_DIR/vmlinuz && -f $OUT_DIR/initrd.img && -f $OUT_DIR/cmdline &&
		-f $STAMP && "$(cat "$STAMP")" == "$1" ]]
}

# --- host packages ----------------------------------------------------------

apt_install() {
	[[ $(id -u) -eq 0 ]] || die "need root to apt-get install: $*"
	log "installing $*"
	# Lock timeout: another apt/dpkg may be running (e.g. provisioning).
	DEBIAN_FRONTEND=noninteractive apt-get -y -q -o DPkg::Lock::Timeout=600 \
		install --no-install-recommends "$@" >&2
}

pkg_installed() {
	[[ $(dpkg-query -W -f='${Status}' "$1" 2>/dev/null) == "install ok installed" ]]
}

ensure_host_tools() {
	local missing=()
	pkg_installed busybox-static || missing+=(busybox-static)
	command -v cpio >/dev/null || missing+=(cpio)
	command -v ldd >/dev/null || missing+=(libc-bin)
	if ((${#missing[@]})); then apt_install "${missing[@]}"; fi
	# The static build matters: it runs without any libraries in the initramfs.
	# (Filter with awk, not grep -m1: an early exit + pipefail = SIGPIPE failure.)
	BUSYBOX=$(dpkg-query -L busybox-static | awk '/\/bin\/busybox$/ && !f { print; f = 1 }')
	[[ -x $BUSYBOX ]] || die "busybox-static binary not found"
}

# --- downloads --------------------------------------------------------------

# linux-image-cloud-amd64 is a metapackage; its dependency is the real kernel.
resolve_kernel_pkg() {
	apt-cache depends "$KERNEL_META_PKG" |
		awk '$1 == "Depends:" && $2 ~ /^linux-image-[0-9]/ && !f { print $2; f = 1 }'
}

# apt-get download <pkg> into $1 and unpack it into $2.
fetch_and_unpack() {
	local dl=$1 dest=$2 pkg=$3 sandbox=()
	# As root, apt drops to user _apt, which cannot write into our mktemp dir.
	[[ $(id -u) -eq 0 ]] && sandbox=(-o APT::Sandbox::User=root)
	log "downloading $pkg"
	(cd "$dl" && apt-get -q "${sandbox[@]}" download "$pkg" >&2)
	mkdir -p "$dest"
	dpkg-deb -x "$dl/${pkg}"_*.deb "$dest"
}

# --- kernel modules -----------------------------------------------------------

declare -A KO_PATH=() IS_BUILTIN=() SEEN=()
MODULE_ORDER=()

norm_mod() {
	local n=${1##*/}
	n=${n%%.ko*}
	echo "${n//-/_}"
}

index_modules() {
	local moddir=$1 f
	while IFS= read -r -d '' f; do
		KO_PATH[$(norm_mod "$f")]=$f
	done < <(find "$moddir/kernel" -name '*.ko*' -print0)
	while IFS= read -r f; do
		IS_BUILTIN[$(norm_mod "$f")]=1
	done <"$moddir/modules.builtin"
}

# busybox insmod cannot read compressed modules, so always emit a plain .ko.
ko_cat() {
	case $1 in
	*.ko.xz) xz -dc "$1" ;;
	*.ko.zst) zstd -dc "$1" ;;
	*.ko.gz) gzip -dc "$1" ;;
	*) cat "$1" ;;
	esac
}

# The package ships no modules.dep (depmod runs in postinst), so read the
# "depends=" entry of the module's .modinfo section directly.
module_depends() {
	ko_cat "$1" | tr '\0' '\n' | sed -n 's/^depends=//p' | tr ',' ' '
}

# Depth-first: dependencies land in MODULE_ORDER before their users.
resolve_module() {
	local m dep
	m=$(norm_mod "$1")
	[[ -n ${SEEN[$m]:-} ]] && return 0
	SEEN[$m]=1
	[[ -n ${IS_BUILTIN[$m]:-} ]] && return 0
	[[ -n ${KO_PATH[$m]:-} ]] || die "kernel module $m not found"
	for dep in $(module_depends "${KO_PATH[$m]}"); do
		resolve_module "$dep"
	done
	MODULE_ORDER+=("$m")
}

install_modules() {
	local moddir=$1 root=$2 m
	index_modules "$moddir"
	for m in "${WANTED_MODULES[@]}"; do resolve_module "$m"; done
	mkdir -p "$root/lib/modules"
	: >"$root/lib/modules/load.list"
	for m in "${MODULE_ORDER[@]}"; do
		ko_cat "${KO_PATH[$m]}" >"$root/lib/modules/$m.ko"
		echo "$m" >>"$root/lib/modules/load.list"
	done
	log "modules: ${MODULE_ORDER[*]}"
}

# --- qemu-ga and its libraries ------------------------------------------------

# ldd resolves against the host's libraries; if some are missing, install the
# agent package's own dependencies on the host (normally already present,
# since qemu-system pulls in glib & co).
ensure_libs_resolvable() {
	local bin=$1 deb=$2 deps
	[[ $(ldd "$bin") == *"not found"* ]] || return 0
	deps=$(dpkg-deb -f "$deb" Depends | tr ',' '\n' |
		sed 's/([^)]*)//g; s/|.*//; s/[[:space:]]//g' | grep -v '^$')
	# shellcheck disable=SC2086 # word splitting of the package list is wanted
	apt_install $deps
	[[ $(ldd "$bin") != *"not found"* ]] || die "unresolved libraries for $bin"
}

# Copy every library ldd lists, plus the dynamic loader, to the same paths.
copy_with_libs() {
	local bin=$1 root=$2 dest=$3 lib
	install -D -m 0755 "$bin" "$root$dest"
	while read -r lib; do
		mkdir -p "$root$(dirname "$lib")"
		cp -L "$lib" "$root$lib"
	done < <(ldd "$bin" | awk '$2 == "=>" && $3 ~ /^\// { print $3 } $1 ~ /^\// { print $1 }')
}

install_agent() {
	local work=$1 root=$2 deb
	fetch_and_unpack "$work/dl" "$work/qga" qemu-guest-agent
	deb=$(echo "$work"/dl/qemu-guest-agent_*.deb)
	ensure_libs_resolvable "$work/qga/usr/sbin/qemu-ga" "$deb"
	copy_with_libs "$work/qga/usr/sbin/qemu-ga" "$root" /usr/sbin/qemu-ga
}

# --- root filesystem ----------------------------------------------------------

install_busybox() {
	local root=$1 applet
	install -D -m 0755 "$BUSYBOX" "$root/bin/busybox"
	# Symlinks at build time: saves a `busybox --install` at every boot.
	while read -r applet; do
		[[ -e $root/$applet ]] && continue
		mkdir -p "$root/$(dirname "$applet")"
		ln -s /bin/busybox "$root/$applet"
	done < <("$BUSYBOX" --list-full)
}

install_guest_files() {
	local root=$1
	install -m 0755 "$GUEST_SRC/init" "$root/init"
	install -D -m 0755 "$GUEST_SRC/udhcpc.script" "$root/usr/share/udhcpc/default.script"
	# One wrapper for all power commands (it looks at its own name);
	# replaces the busybox applets, which would signal PID 1 instead.
	install -D -m 0755 "$GUEST_SRC/shutdown" "$root/sbin/shutdown"
	local cmd
	for cmd in poweroff halt reboot; do
		rm -f "$root/sbin/$cmd" "$root/usr/sbin/$cmd" "$root/bin/$cmd"
		ln -s shutdown "$root/sbin/$cmd"
	done
	# qemu-ga -F runs it around guest-fsfreeze-freeze/-thaw (it must exist, or qemu-ga will not start).
	install -D -m 0755 "$GUEST_SRC/fsfreeze-hook" "$root/etc/qemu/fsfreeze-hook"
	# busybox acpid runs /etc/acpi/PWRF/00000080 on the power button.
	mkdir -p "$root/etc/acpi/PWRF"
	printf '#!/bin/sh\nexec /sbin/poweroff\n' >"$root/etc/acpi/PWRF/00000080"
	chmod 0755 "$root/etc/acpi/PWRF/00000080"
}

write_etc() {
	local root=$1
	cat >"$root/etc/os-release" <<-'EOF'
		NAME="novactl test guest"
		ID=novactl-guest
		VERSION_ID=1
		VERSION="1"
		PRETTY_NAME="novactl test guest 1"
	EOF
	echo novactl-guest >"$root/etc/hostname"
	echo 'root:x:0:0:root:/root:/bin/sh' >"$root/etc/passwd"
	echo 'root:x:0:' >"$root/etc/group"
	: >"$root/etc/resolv.conf"
}

make_skeleton() {
	local root=$1 d
	for d in bin sbin usr/bin usr/sbin lib lib64 etc proc sys dev run tmp mnt root var; do
		mkdir -p "$root/$d"
	done
	ln -s ../run "$root/var/run"
	# The kernel opens /dev/console for PID 1 before /init runs (needs root).
	mknod -m 0600 "$root/dev/console" c 5 1 2>/dev/null || true
}

# gzip'd newc cpio, entries sorted and owned by root for reproducibility.
pack_initramfs() {
	local root=$1 out=$2
	(cd "$root" && find . -print0 | LC_ALL=C sort -z |
		cpio --null --create --format=newc --owner=0:0 --reproducible --quiet) |
		gzip -9 -n >"$out"
}

# --- main ---------------------------------------------------------------------

build() {
	local work=$1 staging=$2 kpkg kver
	local root=$work/root
	ensure_host_tools
	mkdir -p "$work/dl"

	kpkg=$(resolve_kernel_pkg)
	[[ -n $kpkg ]] || die "cannot resolve $KERNEL_META_PKG to a kernel package"
	fetch_and_unpack "$work/dl" "$work/kernel" "$kpkg"
	kver=${kpkg#linux-image-}

	make_skeleton "$root"
	install_busybox "$root"
	install_guest_files "$root"
	write_etc "$root"
	install_modules "$work/kernel/lib/modules/$kver" "$root"
	install_agent "$work" "$root"

	cp "$work/kernel/boot/vmlinuz-$kver" "$staging/vmlinuz"
	pack_initramfs "$root" "$staging/initrd.img"
	echo "$CMDLINE" >"$staging/cmdline"
	log "kernel $kver, initrd $(du -k "$staging/initrd.img" | cut -f1) KiB"
}

# Rename the finished files into place; the stamp goes last, so an
# interrupted install is simply rebuilt next time.
publish() {
	local staging=$1 hash=$2 f
	rm -f "$STAMP"
	for f in vmlinuz initrd.img cmdline; do mv -f "$staging/$f" "$OUT_DIR/$f"; done
	echo "$hash" >"$STAMP"
}

main() {
	local hash work staging
	hash=$(recipe_hash)
	if is_up_to_date "$hash"; then
		echo "$OUT_DIR"
		return 0
	fi

	mkdir -p "$OUT_DIR"
	# Serialize concurrent builders (e.g. parallel test runs).
	exec 9>"$OUT_DIR/.lock"
	flock 9
	if ! is_up_to_date "$hash"; then
		work=$(mktemp -d "${TMPDIR:-/tmp}/novactl-guest.XXXXXX")
		staging=$OUT_DIR/.staging.$$
		# shellcheck disable=SC2064 # expand the paths now
		trap "rm -rf '$work' '$staging'" EXIT
		mkdir -p "$staging"
		build "$work" "$staging"
		publish "$staging" "$hash"
	fi
	echo "$OUT_DIR"
}

main "$@"
