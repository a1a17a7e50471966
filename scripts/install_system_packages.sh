#!/usr/bin/env bash
# Debian packages the project needs beyond PyPI: Tesseract with its English and Korean data (OCR=tesseract) and
# the fonts the tests and benchmarks render signs with. Installs only what is missing (apt-get; root or sudo).
# Called by `make install`; on a machine without apt-get it says what to install and goes on.
set -euo pipefail
PKGS=(tesseract-ocr tesseract-ocr-eng tesseract-ocr-kor fonts-dejavu-core fonts-nanum)
missing=()
for p in "${PKGS[@]}"; do
  dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q "install ok installed" || missing+=("$p")
done
[ ${#missing[@]} -eq 0 ] && exit 0
if ! command -v apt-get >/dev/null 2>&1; then
  echo "note: install ${missing[*]} with your package manager (OCR=tesseract and the OCR tests need them)" >&2
  exit 0
fi
SUDO=""
if [ "$(id -u)" -ne 0 ]; then SUDO="sudo"; fi
echo "installing Debian packages: ${missing[*]}" >&2
$SUDO apt-get update -qq
DEBIAN_FRONTEND=noninteractive $SUDO apt-get install -y -qq --no-install-recommends "${missing[@]}" >/dev/null
