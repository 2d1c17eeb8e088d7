#!/usr/bin/env bash
# Build (or reuse) the tiny test guest: a Debian kernel and an initramfs holding busybox-static
# and qemu-guest-agent, nothing else (no disk image). Everything comes from Debian's packages;
# needs root for apt-get the first time. Idempotent: the result is cached and rebuilt only when
# an input changes (package versions, this script).
#
#   ./scripts/build-guest-image.sh        prints on stdout:
#       kernel=PATH    the kernel to boot: the uncompressed vmlinux (ELF with a PVH entry, which
#                      QEMU -kernel and libvirt <kernel> boot directly, skipping the bzImage's
#                      xz decompression: about 5 s under TCG), or the bzImage if that cannot be had
#       bzimage=PATH   Debian's compressed kernel, as shipped
#       initrd=PATH    the initramfs (cpio, gzip)
#       cmdline=...    the kernel command line the image is made for (append hass.* options)
#
# Environment:
#   HASS_GUEST_CACHE       cache directory (default /var/cache/hass/guest)
#   HASS_GUEST_KERNEL_PKG  kernel package (default linux-image-amd64: Debian's cloud kernel,
#                          linux-image-cloud-amd64, has no i6300esb watchdog driver)
#   HASS_GUEST_REBUILD=1   rebuild even if the cache is current
#
# The guest (see /etc/inittab, /etc/init.d/rcS and /sbin/qga-run written below):
#   - busybox init as PID 1; loads virtio (pci, console, net, blk, rng), pvpanic, i6300esb, ACPI button
#     and evdev modules;
#   - qemu-ga on the virtio-serial port named org.qemu.guest_agent.0 (respawned by init);
#   - eth0 by DHCP (busybox udhcpc), or static with hass.ip=ADDR/PREFIX [hass.gw=GW] on the
#     kernel command line; an HTTP server (busybox httpd) on port 80 answering "hass-guest ok";
#   - busybox watchdog petting /dev/watchdog (i6300esb): timeout hass.wdt=SECONDS (default 10,
#     0 = no petter), pet every third of it; kill -9 it and the watchdog fires;
#   - busybox acpid: ACPI power button -> immediate poweroff; /sbin/shutdown (what qemu-ga's
#     guest-shutdown runs) -> immediate poweroff, halt or reboot; `reboot` inside reboots via init;
#   - panic: echo c > /proc/sysrq-trigger (the pvpanic device tells the hypervisor);
#   - a root shell on the serial console after Enter (ttyS0).
set -euo pipefail

cache="${HASS_GUEST_CACHE:-/var/cache/hass/guest}"
kpkg="${HASS_GUEST_KERNEL_PKG:-linux-image-amd64}"
self="$(readlink -f "$0")"
# Kernel command line the image is made for; callers append their own (hass.ip=..., hass.wdt=...).
# cryptomgr.notests: skip the crypto self-tests, half a second of boot under TCG.
# reboot=t: reboot by triple fault, one machine reset. The default (ACPI, then the keyboard
# controller, again and again) makes QEMU reset the machine several times per reboot under TCG,
# and libvirt reports each reset as a reboot event.
cmdline="console=ttyS0 quiet panic=0 8250.nr_uarts=1 cryptomgr.notests reboot=t"

log() { echo "build-guest-image: $*" >&2; }
die() { log "$*"; exit 1; }

# Modules the guest loads, in this order after their dependencies (resolved from the kernel's
# own .modinfo). pvpanic-mmio binds the ISA pvpanic device (ACPI QEMU0001), pvpanic-pci the PCI one.
modules="virtio_pci virtio_console virtio_net virtio_blk virtio-rng pvpanic-mmio pvpanic-pci i6300esb button evdev"

installed() { # package -> installed version ("" if not installed)
  dpkg-query -W -f='${db:Status-Abbrev} ${Version}\n' "$1" 2>/dev/null | sed -n 's/^ii  *//p' || true
}
candidates() { # packages... -> "package version" lines for those apt has a candidate for
  apt-cache policy "$@" 2>/dev/null | awk '/^[^ ].*:$/{p=substr($0,1,length($0)-1)} /^  Candidate:/{if($2!="(none)")print p, $2}'
}

# A metapackage (linux-image-amd64) names the real one (linux-image-6.1.0-NN-amd64); qemu-ga's
# Depends name the libraries it needs. One apt-cache call for both: each takes a second or two.
show=$(apt-cache show --no-all-versions "$kpkg" qemu-guest-agent 2>/dev/null || true)
if [ -z "$show" ]; then # a fresh machine may have no package lists yet
  log "apt-get update (no package lists yet)"
  apt-get update -qq >&2 || die "apt-get update failed"
  show=$(apt-cache show --no-all-versions "$kpkg" qemu-guest-agent 2>/dev/null || true)
fi
real_kpkg=$(echo "$show" | awk -v p="$kpkg" '/^Package:/{cur=$2} cur==p && /^Depends:/{print}' |
  sed 's/^Depends: //' | tr ',' '\n' | sed -n 's/^ *\(linux-image-[0-9][^ ]*\).*/\1/p' | head -1)
[ -n "$real_kpkg" ] || real_kpkg="$kpkg"
libpkgs=$(echo "$show" | awk '/^Package:/{cur=$2} cur=="qemu-guest-agent" && /^Depends:/{sub(/^Depends: /,""); print}' |
  tr ',' '\n' | sed -n 's/^ *\([^ |]*\).*/\1/p' | sort -u)
vers=$(candidates "$real_kpkg" busybox-static qemu-guest-agent)
ver() { echo "$vers" | awk -v p="$1" '$1==p{print $2}'; }
kver=$(ver "$real_kpkg")
bbver=$(ver busybox-static)
gaver=$(ver qemu-guest-agent)
[ -n "$kver" ] || die "no candidate for $real_kpkg (from $kpkg)"
[ -n "$bbver" ] && [ -n "$gaver" ] && [ -n "$libpkgs" ] || die "no candidate for busybox-static or qemu-guest-agent"

# qemu-ga's shared libraries come from the host, so the host must have its library packages
# (the Depends of qemu-guest-agent); the agent itself is only unpacked, never installed here.
missing=""
for p in $libpkgs; do [ -n "$(installed "$p")" ] || missing="$missing $p"; done
if [ -n "$missing" ]; then
  log "apt-get install$missing (qemu-guest-agent's libraries)"
  DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends $missing >&2
fi
libvers=""
for p in $libpkgs; do libvers="$libvers $p=$(installed "$p")"; done

key=$(printf '%s\n' "$(sha256sum <"$self")" "$real_kpkg=$kver" "busybox-static=$bbver" \
  "qemu-guest-agent=$gaver" "$libvers" "$modules" "$cmdline" | sha256sum | cut -c1-16)

print_result() {
  local k="$cache/vmlinuz"
  [ -s "$cache/vmlinux" ] && k="$cache/vmlinux"
  echo "kernel=$k"
  echo "bzimage=$cache/vmlinuz"
  echo "initrd=$cache/initrd.gz"
  echo "cmdline=$cmdline"
  log "kernel $k ($(du -k --apparent-size "$k" | cut -f1) KiB, $(du -k "$k" | cut -f1) KiB on disk)," \
    "bzImage $(du -k "$cache/vmlinuz" | cut -f1) KiB, initrd $cache/initrd.gz" \
    "($(du -k "$cache/initrd.gz" | cut -f1) KiB); $(tr '\n' ' ' <"$cache/versions")"
}

mkdir -p "$cache"
exec 9>"$cache/.lock"
flock 9 # one build at a time; a second caller waits and then finds the cache current
if [ "${HASS_GUEST_REBUILD:-0}" != 1 ] && [ -f "$cache/key" ] && [ "$(cat "$cache/key")" = "$key" ] &&
  [ -s "$cache/vmlinuz" ] && [ -s "$cache/initrd.gz" ]; then
  log "cache current ($key)"
  print_result
  exit 0
fi

rm -f "$cache/key" # until this build is complete
rm -rf "$cache"/build.* # left by a build that was killed
log "building (key $key): $real_kpkg=$kver busybox-static=$bbver qemu-guest-agent=$gaver"
work=$(mktemp -d "$cache/build.XXXXXX")
trap 'rm -rf "$work"' EXIT
debs="$cache/debs"
mkdir -p "$debs"
# apt downloads as its sandbox user where it can write; root-only, it warns and does it as root.
id _apt >/dev/null 2>&1 && chown _apt "$debs" 2>/dev/null || true
# Keep the .debs of the versions in use (a change of this script alone re-downloads nothing).
fetch() { # package version
  local pat="$debs/${1}_*$(echo "$2" | sed 's/^[0-9]*://')_amd64.deb"
  # shellcheck disable=SC2086
  if ! ls $pat >/dev/null 2>&1; then
    rm -f "$debs/${1}_"*.deb
    (cd "$debs" && apt-get download -q "$1=$2" >&2) || die "apt-get download $1=$2 failed"
  fi
  # shellcheck disable=SC2086
  ls $pat | head -1
}
kdeb=$(fetch "$real_kpkg" "$kver")
bbdeb=$(fetch busybox-static "$bbver")
gadeb=$(fetch qemu-guest-agent "$gaver")
for f in "$debs"/*.deb; do # older versions, e.g. the previous kernel ABI's package
  [ "$f" = "$kdeb" ] || [ "$f" = "$bbdeb" ] || [ "$f" = "$gadeb" ] || rm -f "$f"
done

# Kernel: vmlinuz and only the modules the guest loads. Unpacking the whole modules tree takes
# minutes on a busy machine; instead list the package once, then unpack the named modules, read
# their dependencies (depends= in each module's .modinfo) and unpack those, until none is new.
mkdir -p "$work/k"
ktar() { dpkg-deb --fsys-tarfile "$kdeb" | tar -x -C "$work/k" "$@"; }
declare -A modpath=()
while IFS= read -r f; do
  n=${f##*/}
  n=${n%.ko}
  modpath[${n//-/_}]="$f"
done < <(dpkg-deb --fsys-tarfile "$kdeb" | tar -t | grep '^\./lib/modules/[^/]*/kernel/.*\.ko$')
mkdir -p "$work/bb" "$work/ga"
dpkg-deb -x "$bbdeb" "$work/bb"
dpkg-deb -x "$gadeb" "$work/ga"
bb="$work/bb/bin/busybox"

root="$work/root"
mkdir -p "$root"/{bin,sbin,usr/bin,usr/sbin,etc/init.d,etc/acpi/PWRF,proc,sys,dev,run,tmp,root,www,var,lib/modules,usr/share/udhcpc}
ln -s /run "$root/var/run"
ln -s /run/log "$root/var/log"
cp "$bb" "$root/bin/busybox"
for a in $("$bb" --list-full); do
  [ -e "$root/$a" ] || [ -L "$root/$a" ] || ln -s /bin/busybox "$root/$a"
done
ln -sf bin/busybox "$root/init"

# qemu-ga and the shared libraries ldd finds for it (host libraries: versions are in the key).
cp "$work/ga/usr/sbin/qemu-ga" "$root/usr/sbin/qemu-ga"
libs=$(ldd "$work/ga/usr/sbin/qemu-ga" | awk '/=> \//{print $3} /^\t\/lib/{print $1}')
# libgcc_s: glibc loads it at run time for thread cancellation/unwinding.
for l in /lib/x86_64-linux-gnu/libgcc_s.so.1 /usr/lib/x86_64-linux-gnu/libgcc_s.so.1; do
  [ -f "$l" ] && libs="$libs $l" && break
done
for l in $libs; do
  [ -f "$l" ] || die "qemu-ga needs $l, which is missing"
  d="$root$(dirname "$l")"
  mkdir -p "$d"
  cp -L "$l" "$d/"
done
if ldd "$work/ga/usr/sbin/qemu-ga" | grep -q 'not found'; then
  die "qemu-ga has unresolved libraries: $(ldd "$work/ga/usr/sbin/qemu-ga" | grep 'not found')"
fi
# Debian's ld.so is /lib64/ld-linux-x86-64.so.2 -> /lib/x86_64-linux-gnu/ld-linux-x86-64.so.2.
if [ ! -e "$root/lib64/ld-linux-x86-64.so.2" ]; then
  mkdir -p "$root/lib64" && cp -L /lib64/ld-linux-x86-64.so.2 "$root/lib64/"
fi

# Modules and their dependencies, ordered so that each comes after what it depends on.
declare -A done_mod=()
want=() order=()
for m in $modules; do
  [ -n "${modpath[${m//-/_}]:-}" ] || die "module $m not in $real_kpkg"
  want+=("${m//-/_}")
done
first=1
while [ "${#want[@]}" -gt 0 ]; do
  paths=()
  for n in "${want[@]}"; do paths+=("${modpath[$n]}"); done
  if [ "$first" = 1 ]; then ktar --wildcards './boot/vmlinuz-*' './boot/config-*' "${paths[@]}"; else ktar "${paths[@]}"; fi
  first=0
  next=()
  for n in "${want[@]}"; do
    done_mod[$n]=1
    for d in $("$bb" strings "$work/k/${modpath[$n]}" | sed -n 's/^depends=//p' | tr ',' ' '); do
      d=${d//-/_}
      [ -n "${done_mod[$d]:-}" ] && continue
      [ -n "${modpath[$d]:-}" ] || die "module $n needs $d, not in $real_kpkg"
      case " ${next[*]:-} " in *" $d "*) ;; *) next+=("$d") ;; esac
    done
  done
  want=("${next[@]:+${next[@]}}")
done
vmlinuz=$(ls "$work"/k/boot/vmlinuz-* | head -1)
kmoddir=$(ls -d "$work"/k/lib/modules/* | head -1)
krel=$(basename "$kmoddir")
add_mod() { # name: its dependencies first, then itself
  local n="${1//-/_}" d
  [ -n "${done_mod[$n]:-}" ] || return 0
  done_mod[$n]=""
  for d in $("$bb" strings "$work/k/${modpath[$n]}" | sed -n 's/^depends=//p' | tr ',' ' '); do add_mod "$d"; done
  order+=("${modpath[$n]#./lib/modules/"$krel"/}")
}
for m in $modules; do add_mod "$m"; done
: >"$root/etc/modules"
for rel in "${order[@]}"; do
  mkdir -p "$root/lib/modules/$(dirname "$rel")"
  cp "$kmoddir/$rel" "$root/lib/modules/$rel"
  echo "$rel" >>"$root/etc/modules"
done

# /dev/console for the kernel before devtmpfs (the kernel's built-in initramfs has one too).
mknod -m 600 "$root/dev/console" c 5 1 2>/dev/null || true

cat >"$root/etc/inittab" <<'EOF'
::sysinit:/etc/init.d/rcS
::respawn:/sbin/qga-run
ttyS0::askfirst:-/bin/sh
::ctrlaltdel:/sbin/reboot
::shutdown:/etc/init.d/rcK
EOF

cat >"$root/etc/init.d/rcS" <<'EOF'
#!/bin/sh
export PATH=/sbin:/usr/sbin:/bin:/usr/bin
mount -t proc proc /proc
mount -t sysfs sysfs /sys
mount -t devtmpfs devtmpfs /dev 2>/dev/null
mkdir -p /dev/pts /dev/virtio-ports
mount -t devpts devpts /dev/pts
mount -t tmpfs -o mode=0755 tmpfs /run
mkdir -p /run/log
hostname hass-guest
for m in $(cat /etc/modules); do insmod "/lib/modules/$m" 2>/dev/null; done
# What udev would do: /dev/virtio-ports/NAME -> /dev/vportNpM.
for n in /sys/class/virtio-ports/*/name; do
  [ -f "$n" ] || continue
  p=${n%/name}
  ln -sf "../${p##*/}" "/dev/virtio-ports/$(cat "$n")"
done
arg() { # value of hass.NAME= on the kernel command line, else $2
  v=$2
  for w in $(cat /proc/cmdline); do case "$w" in "hass.$1="*) v=${w#*=} ;; esac; done
  echo "$v"
}
# Watchdog petter: /dev/watchdog appears once i6300esb has bound.
wdt=$(arg wdt 10)
if [ "$wdt" != 0 ] && [ -c /dev/watchdog ]; then
  per=$((wdt / 3)); [ "$per" -ge 1 ] || per=1
  watchdog -T "$wdt" -t "$per" /dev/watchdog
fi
acpid -l /run/log/acpid.log
ip link set lo up
if ip link show eth0 >/dev/null 2>&1; then
  ip link set eth0 up
  ip=$(arg ip "")
  if [ -n "$ip" ]; then
    ip addr add "$ip" dev eth0
    gw=$(arg gw "")
    [ -n "$gw" ] && ip route add default via "$gw"
  else
    # In the background, so a network without DHCP does not hold up the boot (and the agent).
    udhcpc -f -t 5 -T 1 -A 3 -i eth0 -s /usr/share/udhcpc/default.script >/run/log/udhcpc.log 2>&1 &
  fi
fi
echo "hass-guest ok" >/www/index.html
httpd -p 80 -h /www
echo "hass-guest: up in $(cut -d' ' -f1 /proc/uptime)s" >/dev/console
EOF

cat >"$root/etc/init.d/rcK" <<'EOF'
#!/bin/sh
# On poweroff/reboot: stop the watchdog petter cleanly (it disarms the watchdog), then sync.
killall watchdog 2>/dev/null
sync
EOF

cat >"$root/sbin/qga-run" <<'EOF'
#!/bin/sh
# qemu-ga on the virtio-serial port org.qemu.guest_agent.0; init respawns it. The port appears
# when the host's control message adding it has been handled, which can be after rcS ran.
name=org.qemu.guest_agent.0
i=0
while :; do
  for n in /sys/class/virtio-ports/*/name; do
    [ -f "$n" ] && [ "$(cat "$n")" = "$name" ] && p=${n%/name} && dev=/dev/${p##*/}
  done
  [ -n "${dev:-}" ] && [ -c "$dev" ] && break
  i=$((i + 1))
  if [ "$i" -ge 100 ]; then
    sleep 30 # no agent channel in this VM
    exit 0
  fi
  usleep 100000
done
mkdir -p /dev/virtio-ports
ln -sf "../${dev#/dev/}" "/dev/virtio-ports/$name"
exec /usr/sbin/qemu-ga -m virtio-serial -p "/dev/virtio-ports/$name" -t /run -f /run/qemu-ga.pid
EOF

# Power off / reboot at once (sync, then the reboot(2) call without init's two seconds of
# SIGTERM, SIGKILL and waiting: nothing in this guest needs stopping). Used by the ACPI power
# button and by /sbin/shutdown, which is what qemu-ga's guest-shutdown runs
# (shutdown -h -P|-H|-r +0 "message"). `reboot`/`poweroff` typed inside still go through init.
cat >"$root/sbin/shutdown" <<'EOF'
#!/bin/sh
action=poweroff
for a in "$@"; do
  case "$a" in
  -r) action=reboot ;;
  -H) action=halt ;;
  esac
done
echo "hass-guest: $action" >/dev/console
sync
exec /bin/busybox "$action" -f
EOF

cat >"$root/etc/acpi/PWRF/00000080" <<'EOF'
#!/bin/sh
exec /sbin/shutdown -h -P +0 "ACPI power button"
EOF

cat >"$root/usr/share/udhcpc/default.script" <<'EOF'
#!/bin/sh
case "$1" in
deconfig)
  ip addr flush dev "$interface"
  ip link set "$interface" up
  ;;
bound | renew)
  ip addr flush dev "$interface"
  ip addr add "$ip/${mask:-24}" dev "$interface"
  if [ -n "$router" ]; then
    set -- $router
    ip route replace default via "$1" dev "$interface"
  fi
  : >/etc/resolv.conf
  for d in $dns; do echo "nameserver $d" >>/etc/resolv.conf; done
  ;;
esac
exit 0
EOF

chmod 755 "$root/etc/init.d/rcS" "$root/etc/init.d/rcK" "$root/sbin/qga-run" "$root/sbin/shutdown" \
  "$root/etc/acpi/PWRF/00000080" "$root/usr/share/udhcpc/default.script"
echo "root:x:0:0:root:/root:/bin/sh" >"$root/etc/passwd"
echo "root:x:0:" >"$root/etc/group"

# cpio (newc, owned by root) + gzip.
(cd "$root" && find . -mindepth 1 | LC_ALL=C sort | "$bb" cpio -o -H newc -R 0:0 2>/dev/null) |
  gzip -9 -n >"$work/initrd.gz"
cp "$vmlinuz" "$work/vmlinuz"
# The uncompressed kernel for PVH boot: the xz stream inside the bzImage (Debian's amd64 kernels
# are xz-compressed), if the kernel has CONFIG_PVH. Stored sparse: its zero pages take no disk.
rm -f "$cache/vmlinux"
if grep -q '^CONFIG_PVH=y' "$work"/k/boot/config-* 2>/dev/null; then
  off=$(LC_ALL=C grep -obUaP '\xfd7zXZ\x00' "$vmlinuz" 2>/dev/null | head -1 | cut -d: -f1)
  if [ -n "$off" ]; then
    if command -v xz >/dev/null 2>&1; then unxz=(xz -dc --single-stream); else unxz=("$bb" xzcat); fi
    { tail -c +"$((off + 1))" "$vmlinuz" 2>/dev/null || true; } | "${unxz[@]}" >"$work/vmlinux.full" 2>/dev/null || true
    if [ "$(head -c 4 "$work/vmlinux.full" | od -An -tx1 | tr -d ' ')" = 7f454c46 ]; then
      cp --sparse=always "$work/vmlinux.full" "$work/vmlinux"
    fi
    rm -f "$work/vmlinux.full"
  fi
fi
[ -s "$work/vmlinux" ] || log "no PVH vmlinux from $real_kpkg: booting the bzImage (slower)"
{
  echo "$real_kpkg=$kver"
  echo "busybox-static=$bbver"
  echo "qemu-guest-agent=$gaver"
  for p in $libvers; do echo "$p"; done
  echo "kernel-release=$krel"
} >"$work/versions"
mv -f "$work/vmlinuz" "$cache/vmlinuz"
[ -s "$work/vmlinux" ] && mv -f "$work/vmlinux" "$cache/vmlinux"
mv -f "$work/initrd.gz" "$cache/initrd.gz"
mv -f "$work/versions" "$cache/versions"
echo "$key" >"$cache/key"
print_result
