#!/usr/bin/env bash
# Run edge bundles on an emulated Android-style ARM64 target: `make edge-arm64`.
#
#   scripts/edge_arm64.sh [BUNDLE_DIR ...]
#
# Builds (once, ~10 min) an aarch64 Debian root with debootstrap + qemu-user-static under
# $EDGE_ARM64_DIR (default .edge-arm64/, git-ignored), downloads the aarch64 wheels of numpy
# ai-edge-litert and Pillow on the host (pip download --platform manylinux_2_27_aarch64), installs
# them into a venv inside the root that holds nothing else, then runs `modelport_edge.py verify`
# (golden vectors, and the raw samples through the device's image processing), `predict --image`
# of each bundled sample and `bench` of every BUNDLE_DIR there. Without a bundle it only
# prepares the root. Needs root (debootstrap, chroot, mounts) and Debian's package mirror.
#
# LiteRT 2.2/2.3 crash under qemu-user when they parse the host's x86 /proc/cpuinfo: the
# chroot gets no sysfs and an arm64 cpuinfo is bind-mounted over its /proc/cpuinfo.
set -euo pipefail

REPO=$(cd "$(dirname "$0")/.." && pwd)
WORK=${EDGE_ARM64_DIR:-$REPO/.edge-arm64}
ROOTFS=$WORK/rootfs
WHEELS=$WORK/wheels
SUITE=${EDGE_ARM64_SUITE:-bookworm}   # Python 3.11, like the host
MIRROR=${DEBIAN_MIRROR:-http://deb.debian.org/debian}
HOST_PY=${HOST_PYTHON:-$REPO/.venv/bin/python}
VENV=/opt/edge                         # inside the root: numpy + ai-edge-litert + Pillow only
PACKAGES=(numpy ai-edge-litert pillow)

# a clean environment inside the root: the host's PIP_* settings must not leak in
in_root() { chroot "$ROOTFS" /usr/bin/env -i PATH=/usr/local/bin:/usr/bin:/bin HOME=/root LANG=C.UTF-8 "$@"; }
say() { echo "==> edge-arm64: $*"; }
die() { echo "edge-arm64: error: $*" >&2; exit 1; }

[ "$(id -u)" = 0 ] || die "needs root (debootstrap, chroot and bind mounts); run it with sudo"
for bundle in "$@"; do
    [ -f "$bundle/bundle.json" ] || die "$bundle is not a bundle directory (no bundle.json); build one with modelport bundle"
done

host_tools() {
    if ! command -v debootstrap >/dev/null || ! command -v qemu-aarch64-static >/dev/null; then
        say "installing qemu-user-static and debootstrap (apt)"
        apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq qemu-user-static debootstrap binfmt-support >/dev/null
    fi
    if [ ! -e /proc/sys/fs/binfmt_misc/register ]; then
        mount -t binfmt_misc binfmt_misc /proc/sys/fs/binfmt_misc
    fi
    if [ ! -e /proc/sys/fs/binfmt_misc/qemu-aarch64 ]; then
        update-binfmts --enable qemu-aarch64 || die "cannot register qemu-aarch64 with binfmt_misc"
    fi
}

# the binfmt handler named by the host's registration, present inside the root
install_qemu() {
    local handler
    handler=$(sed -n 's/^interpreter //p' /proc/sys/fs/binfmt_misc/qemu-aarch64)
    mkdir -p "$ROOTFS$(dirname "$handler")" "$ROOTFS/usr/bin"
    cp -L "$(command -v qemu-aarch64-static)" "$ROOTFS/usr/bin/qemu-aarch64-static"
    cp -L "$(command -v qemu-aarch64-static)" "$ROOTFS$handler"
}

build_root() {
    if [ -f "$ROOTFS/.modelport-root" ]; then
        say "reusing the aarch64 root $ROOTFS"
        install_qemu
        return
    fi
    say "debootstrap $SUITE arm64 into $ROOTFS (first time: ~10 minutes)"
    rm -rf "$ROOTFS"
    mkdir -p "$ROOTFS"
    debootstrap --arch=arm64 --variant=minbase --foreign --include=python3,python3-venv \
        "$SUITE" "$ROOTFS" "$MIRROR" > "$WORK/debootstrap.log" 2>&1 || { tail -20 "$WORK/debootstrap.log"; die "debootstrap (first stage) failed"; }
    install_qemu
    in_root /debootstrap/debootstrap --second-stage >> "$WORK/debootstrap.log" 2>&1 \
        || { tail -20 "$WORK/debootstrap.log"; die "debootstrap (second stage, emulated) failed"; }
    touch "$ROOTFS/.modelport-root"
}

download_wheels() {
    local stamp="$WHEELS/.${PACKAGES[*]// /_}"
    if [ -f "$stamp" ]; then
        return
    fi
    say "downloading aarch64 wheels of ${PACKAGES[*]} on the host"
    rm -rf "$WHEELS"
    mkdir -p "$WHEELS"
    "$HOST_PY" -m pip --disable-pip-version-check download -q -c "$REPO/constraints.txt" \
        --only-binary=:all: --platform manylinux_2_27_aarch64 --python-version 3.11 --implementation cp \
        -d "$WHEELS" "${PACKAGES[@]}"
    touch "$stamp"
}

install_venv() {
    if [ -x "$ROOTFS$VENV/bin/python" ] && cmp -s "$WHEELS/.list" "$ROOTFS$VENV/.wheels"; then
        return
    fi
    ls "$WHEELS"/*.whl | xargs -n1 basename > "$WHEELS/.list"
    say "installing $(tr '\n' ' ' < "$WHEELS/.list")into $VENV (emulated pip, no index)"
    rm -rf "$ROOTFS$VENV" "$ROOTFS/wheels"
    cp -r "$WHEELS" "$ROOTFS/wheels"
    in_root /usr/bin/python3 -m venv "$VENV"
    in_root "$VENV/bin/python" -m pip --disable-pip-version-check install -q --no-index \
        --find-links /wheels "${PACKAGES[@]}"
    cp "$WHEELS/.list" "$ROOTFS$VENV/.wheels"
}

MOUNTS=()
unmount_all() {
    local i
    for ((i = ${#MOUNTS[@]} - 1; i >= 0; i--)); do umount "${MOUNTS[i]}" 2>/dev/null || umount -l "${MOUNTS[i]}" || true; done
}

# what an Android phone's big cores (Cortex-A76) report, one entry per host CPU
arm64_cpuinfo() {
    local cpu
    for ((cpu = 0; cpu < $(nproc); cpu++)); do
        printf 'processor\t: %d\nBogoMIPS\t: 38.40\n' "$cpu"
        printf 'Features\t: fp asimd evtstrm aes pmull sha1 sha2 crc32 atomics fphp asimdhp cpuid asimdrdm lrcpc dcpop asimddp\n'
        printf 'CPU implementer\t: 0x41\nCPU architecture: 8\nCPU variant\t: 0x4\nCPU part\t: 0xd0b\nCPU revision\t: 1\n\n'
    done
}

# /proc without sysfs, an aarch64 cpuinfo over the host's
mount_proc() {
    mkdir -p "$ROOTFS/proc"
    mount -t proc proc "$ROOTFS/proc"
    MOUNTS+=("$ROOTFS/proc")
    arm64_cpuinfo > "$WORK/cpuinfo"
    mount --bind "$WORK/cpuinfo" "$ROOTFS/proc/cpuinfo"
    MOUNTS+=("$ROOTFS/proc/cpuinfo")
    # No sysfs, not even fake CPU lists: cpuinfo then reports "failed to parse ... processors" and
    # LiteRT keeps its generic kernels. With the lists it identifies the cores, and LiteRT 2.3's
    # XNNPACK picks int8 kernels that qemu 7.2 computes wrongly (the dynamic-range int8 digits
    # model was off by 33.7 and modelport_edge.py refused it).
    rm -rf "$ROOTFS/sys/devices"
}

# predict --image of the first raw sample, then classify_image of every sample with every variant
# (decode -> label on aarch64), counted against the server's labels (verify is the gate: it compares
# each variant with the server's processing through that same variant)
classify_samples() {
    local name=$1 first
    first=$(cd "$ROOTFS/bundles/$name" && ls samples 2>/dev/null | head -1)
    [ -n "$first" ] || return 0
    say "predict --image samples/$first ($name) on aarch64"
    in_root "$VENV/bin/python" "/bundles/$name/modelport_edge.py" predict "/bundles/$name" \
        --image "/bundles/$name/samples/$first" -k 3 || return 1
    in_root "$VENV/bin/python" -c 'import json, sys
sys.path.insert(0, sys.argv[1])
from modelport_edge import EdgeModel
bundle = json.load(open(sys.argv[1] + "/bundle.json"))
samples = bundle["samples"]
for variant in bundle["variants"]:
    model, same = EdgeModel.open(sys.argv[1], variant), 0
    for sample in samples:
        same += next(iter(model.classify_image(sys.argv[1] + "/" + sample["file"], k=1))) == next(iter(sample["response"]))
    print(f"    classify_image {variant:13s} {same}/{len(samples)} samples labelled as the server labelled them")
' "/bundles/$name"
}

run_bundles() {
    local bundle name status=0
    mount_proc
    in_root "$VENV/bin/python" -c 'import platform, sys, numpy, ai_edge_litert, PIL
print("target:", platform.machine(), "python", sys.version.split()[0], "numpy", numpy.__version__, "Pillow", PIL.__version__)'
    in_root "$VENV/bin/python" -m pip --disable-pip-version-check list 2>/dev/null | sed 's/^/    /'
    for bundle in "$@"; do
        name=$(basename "$bundle")
        rm -rf "$ROOTFS/bundles/$name"
        mkdir -p "$ROOTFS/bundles"
        cp -r "$bundle" "$ROOTFS/bundles/$name"
        say "verify $name on aarch64"
        in_root "$VENV/bin/python" "/bundles/$name/modelport_edge.py" verify "/bundles/$name" || status=1
        classify_samples "$name" || status=1
        say "bench $name on aarch64"
        in_root "$VENV/bin/python" "/bundles/$name/modelport_edge.py" bench "/bundles/$name" \
            --runs "${EDGE_BENCH_RUNS:-50}" --json "/bundles/$name.bench.json" || status=1
        cp "$ROOTFS/bundles/$name.bench.json" "$WORK/$name.bench.json" 2>/dev/null || true
    done
    return $status
}

mkdir -p "$WORK"
host_tools
build_root
download_wheels
install_venv
trap unmount_all EXIT
if [ $# -gt 0 ]; then
    run_bundles "$@"
    say "bench JSON in $WORK/*.bench.json"
else
    say "root ready; pass bundle directories to verify and bench them"
fi
