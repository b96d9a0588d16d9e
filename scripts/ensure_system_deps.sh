#!/usr/bin/env bash
# Installs the Debian packages headless MuJoCo rendering needs (EGL + OSMesa software GL), when missing.
# Safe to run repeatedly; does nothing when the libraries are already present or when not root.
set -euo pipefail
need=()
ldconfig -p | grep -q 'libEGL_mesa.so' || need+=(libegl1 libegl-mesa0 libgl1-mesa-dri)
ldconfig -p | grep -q 'libOSMesa.so' || need+=(libosmesa6)
[ ${#need[@]} -eq 0 ] && exit 0
if [ "$(id -u)" -ne 0 ] || ! command -v apt-get >/dev/null; then
    echo "fastvla: headless rendering needs these Debian packages: ${need[*]}" >&2
    echo "         install them with: sudo apt-get install -y ${need[*]}" >&2
    exit 0
fi
echo "fastvla: installing ${need[*]} for headless rendering"
export DEBIAN_FRONTEND=noninteractive
apt-get update -qq
apt-get install -y -qq --no-install-recommends "${need[@]}" >/dev/null
