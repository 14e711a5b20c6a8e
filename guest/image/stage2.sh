#!/bin/sh
# Grove stage-2 init: PID 1 inside the root filesystem (installed as /run/grove/init).
# Finishes the mounts, names the host, configures the network, then supervises the guest
# agent forever: PID 1 must never exit (the kernel would panic).
export PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin
export HOME=/root LANG=C.UTF-8 TERM=xterm-256color
cd /

log() { echo "grove-init: $*" > /dev/console; }

mkdir -p /dev/pts /dev/shm /tmp
mount -t devpts -o gid=5,mode=620,ptmxmode=666 devpts /dev/pts || log "WARN cannot mount /dev/pts"
[ -e /dev/ptmx ] || ln -s pts/ptmx /dev/ptmx
mount -t tmpfs -o mode=1777,nosuid,nodev tmpfs /dev/shm || log "WARN cannot mount /dev/shm"
mount -t tmpfs -o mode=1777,nosuid,nodev tmpfs /tmp || log "WARN cannot mount /tmp"
# Links udev would make: bash process substitution needs /dev/fd.
ln -sfn /proc/self/fd /dev/fd
ln -sf /proc/self/fd/0 /dev/stdin
ln -sf /proc/self/fd/1 /dev/stdout
ln -sf /proc/self/fd/2 /dev/stderr
# Stable names for virtio-serial ports: /dev/virtio-ports/<name> -> /dev/vportNpM.
mkdir -p /dev/virtio-ports
for port in /sys/class/virtio-ports/*; do
    [ -r "$port/name" ] || continue
    ln -sf "../${port##*/}" "/dev/virtio-ports/$(cat "$port/name")"
done

# Settings from the kernel command line, with slirp's defaults for the network.
hostname=grove
ip_addr=10.0.2.15/24
gateway=10.0.2.2
dns=10.0.2.3
for arg in $(cat /proc/cmdline); do
    case "$arg" in
        grove.hostname=*) hostname="${arg#grove.hostname=}" ;;
        grove.ip=*) ip_addr="${arg#grove.ip=}" ;;
        grove.gw=*) gateway="${arg#grove.gw=}" ;;
        grove.dns=*) dns="${arg#grove.dns=}" ;;
    esac
done
case "$hostname" in
    ""|*[!A-Za-z0-9.-]*) log "WARN invalid hostname '$hostname', using grove"; hostname=grove ;;
esac
echo "$hostname" > /proc/sys/kernel/hostname
echo "$hostname" > /etc/hostname
printf '127.0.0.1\tlocalhost\n127.0.1.1\t%s\n::1\tlocalhost ip6-localhost ip6-loopback\n' \
    "$hostname" > /etc/hosts

ip link set lo up
if [ -e /sys/class/net/eth0 ]; then
    ip link set eth0 up
    ip addr add "$ip_addr" dev eth0 || log "WARN cannot set $ip_addr on eth0"
    ip route add default via "$gateway" || log "WARN cannot route via $gateway"
    echo "nameserver $dns" > /etc/resolv.conf
fi

log "hostname $hostname"
log "stage2 ready"
while true; do
    PYTHONPATH=/run/grove python3 -m guest.agent < /dev/null
    log "agent exited $?"
    sleep 0.2
done
