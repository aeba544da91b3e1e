#!/usr/bin/env bash
# Install mosaicml-streaming 0.13.0 beside (not into) .venv, for the MDS interop tests.
#
# Its own pins (numpy<2.2, transformers<5, ...) clash with ours, so everything goes with
# --no-deps into .cache/side/streaming, which only the interop test's subprocess puts first
# on sys.path. The list holds streaming plus what `import streaming` needs that .venv lacks
# (or has at a version its import chain refuses). Idempotent: a stamp named after the list
# skips the install; a new list reinstalls. The folder appears only once complete.
set -euo pipefail
cd "$(dirname "$0")/.."

PY="${PY:-.venv/bin/python}"
DEST=.cache/side/streaming
PACKAGES=(
    mosaicml-streaming==0.13.0
    # streaming.base.dataloader imports transformers; transformers 4.x refuses huggingface_hub 1.x.
    transformers==4.57.6
    huggingface_hub==0.36.0
    safetensors==0.8.0
    regex==2026.11.19
    requests==2.34.2
    charset_normalizer==3.5.3
    # streaming.vision imports torchvision; 0.26.0 is the build for torch 2.11.0.
    torchvision==0.26.0
    # streaming.base.compression imports all of its codecs.
    zstd==1.5.7.2
    brotli==1.2.1
    python-snappy==0.7.3
    cramjam==2.14.0
    # streaming.base.registry_utils
    catalogue==2.0.10
)
STAMP=".installed-$(printf '%s\n' "${PACKAGES[@]}" | cksum | cut -d' ' -f1)"

if [ -f "$DEST/$STAMP" ]; then
    echo "side_install_streaming: already installed in $DEST"
    exit 0
fi

TMP="$DEST.tmp.$$"
trap 'rm -rf "$TMP"' EXIT
rm -rf "$TMP"
"$PY" -m pip install --quiet --no-deps --disable-pip-version-check --target "$TMP" "${PACKAGES[@]}"
PYTHONPATH="$TMP" "$PY" -c "import streaming, streaming.base.util; assert streaming.__version__ == '0.13.0'"
touch "$TMP/$STAMP"
rm -rf "$DEST"
mv "$TMP" "$DEST"
echo "side_install_streaming: installed mosaicml-streaming 0.13.0 in $DEST"
