#!/usr/bin/env bash
# Install EleutherAI's lm-evaluation-harness 0.4.13 into its own virtualenv, .cache/venv-lmeval, for
# the ICL agreement test (tests/training/test_eval_icl.py) and bench/generate_bench.py's reference numbers.
#
# lm-eval runs the exported Hugging Face model with the torch, transformers and tokenizers of .venv:
# a .pth file puts .venv's site-packages after the venv's own, so only what .venv lacks is installed
# here (datasets pulls a newer pyarrow than .venv's pin, which stays in this venv). Everything is
# pinned exactly and installed with --no-deps, so an upstream release cannot change the reference.
# Idempotent: a stamp named after the list skips the install; the venv appears only once checked.
set -euo pipefail
cd "$(dirname "$0")/.."

PY="${PY:-.venv/bin/python}"
DEST=.cache/venv-lmeval
PACKAGES=(
    lm_eval==0.4.13
    accelerate==1.15.0 psutil==7.2.2
    datasets==5.2.0 pyarrow==26.0.1 dill==0.4.1 multiprocess==0.70.19
    evaluate==0.4.6 sacrebleu==2.6.0 portalocker==4.4.2 colorama==0.4.6 lxml==6.1.3 tabulate==0.10.0
    rouge_score==0.1.2 absl-py==2.5.1 nltk==3.10.4 sqlitedict==2.1.0 word2number==1.1 more-itertools==11.2.1
    pytablewriter==1.2.1 DataProperty==1.1.1 mbstrdecoder==1.1.5 chardet==6.0.0.post1 pathvalidate==3.3.1
    tabledata==1.3.5 tcolorpy==0.1.7 typepy==1.3.5 defusedxml==0.7.1
)
STAMP=".installed-$(printf '%s\n' "${PACKAGES[@]}" | cksum | cut -d' ' -f1)"

if [ -f "$DEST/$STAMP" ]; then
    echo "side_install_lmeval: already installed in $DEST"
    exit 0
fi

TMP="$DEST.tmp.$$"
trap 'rm -rf "$TMP"' EXIT
rm -rf "$TMP"
BASE_PY="$("$PY" -c 'import sys; print(sys._base_executable)')"
"$BASE_PY" -m venv "$TMP"
SITE="$("$TMP/bin/python" -c 'import sysconfig; print(sysconfig.get_paths()["purelib"])')"
VENV_SITE="$("$PY" -c 'import sysconfig; print(sysconfig.get_paths()["purelib"])')"
echo "$(cd "$VENV_SITE" && pwd)" > "$SITE/kiln_venv.pth"
"$TMP/bin/python" -m pip install --quiet --no-deps --disable-pip-version-check "${PACKAGES[@]}"
"$TMP/bin/python" -c "import lm_eval, torch, transformers; from lm_eval.models.huggingface import HFLM"
touch "$TMP/$STAMP"
rm -rf "$DEST"
mv "$TMP" "$DEST"
echo "side_install_lmeval: installed lm_eval 0.4.13 in $DEST"
