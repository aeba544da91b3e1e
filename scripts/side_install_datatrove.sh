#!/usr/bin/env bash
# Install datatrove 0.10.1 into its own virtualenv, .cache/venv-datatrove, for the quality stage's
# agreement test (tests/etl/test_quality_agreement.py) and bench/quality_agreement.py.
#
# datatrove's own pins (huggingface_hub 2.x, fsspec 2026, numpy 2.4, ...) clash with .venv's, so it
# gets a separate venv made from the same base interpreter as .venv; .venv is never touched.
# For English, datatrove's word and sentence splitting is spaCy's blank "en" pipeline (tokenizer
# plus sentencizer): rules that ship inside the spacy wheel, so nothing is downloaded at run time
# (nltk, and its punkt data, is not used for English in 0.10.1 and is not installed).
#
# Every package is pinned exactly and installed with --no-deps, so a new upstream release can
# never change what the test compares against. Idempotent: a stamp named after the list skips the
# install; a new list rebuilds the venv. The venv is built under a temporary name, moved into place,
# and removed again if it fails the check; the stamp is written last.
set -euo pipefail
cd "$(dirname "$0")/.."

PY="${PY:-.venv/bin/python}"
DEST=.cache/venv-datatrove
PACKAGES=(
    datatrove==0.10.1
    # datatrove's own dependencies (what `import datatrove.pipeline.filters` needs)
    dill==0.4.1
    fsspec==2026.9.0
    huggingface_hub==2.4.0
    hf-xet==1.8.0
    httpx==0.28.1
    httpx2==2.16.2
    httpcore==1.0.9
    httpcore2==2.16.2
    h11==0.16.0
    anyio==4.16.0
    idna==3.20
    certifi==2026.10.19.post1
    truststore==0.10.5
    filelock==4.3.1
    humanize==4.17.0
    loguru==0.7.3
    multiprocess==0.70.19
    numpy==2.4.6
    packaging==26.4
    PyYAML==6.0.4
    tqdm==4.70.1
    typing_extensions==4.16.0
    regex==2026.11.19
    # spaCy: datatrove's English word tokenizer and sentence splitter
    spacy==3.8.18
    spacy-legacy==3.0.12
    spacy-loggers==1.0.5
    thinc==8.3.14
    blis==1.3.4
    catalogue==2.0.10
    cloudpathlib==0.26.0
    confection==1.3.4
    cymem==2.0.16
    murmurhash==1.0.16
    preshed==3.0.15
    srsly==2.5.6
    wasabi==1.1.3
    weasel==1.0.1
    smart_open==9.0.2
    wrapt==2.5.2
    pydantic==2.14.4
    pydantic_core==2.50.5
    annotated-types==0.8.0
    annotated-doc==0.0.7
    typing-inspection==0.4.5
    typer==0.29.2
    click==8.5.1
    shellingham==1.5.4
    rich==15.0.0
    markdown-it-py==4.3.0
    mdurl==0.1.2
    Pygments==2.21.0
    Jinja2==3.1.6
    MarkupSafe==3.0.4
    requests==2.34.2
    charset-normalizer==3.5.3
    urllib3==2.8.0
    cloudpickle==3.1.3
    defusedxml==0.7.1
)
STAMP=".installed-$(printf '%s\n' "${PACKAGES[@]}" | cksum | cut -d' ' -f1)"

if [ -f "$DEST/$STAMP" ]; then
    echo "side_install_datatrove: already installed in $DEST"
    exit 0
fi

# Build under a temporary name, then move: a venv's scripts hold absolute paths, so it is created
# with --without-pip and used through `python -m pip` from .venv's pip (pip --python targets it).
TMP="$DEST.tmp.$$"
trap 'rm -rf "$TMP"' EXIT
rm -rf "$TMP"
"$PY" -m venv --without-pip "$TMP"
"$PY" -m pip --python "$TMP/bin/python" install --quiet --no-deps --disable-pip-version-check "${PACKAGES[@]}"
rm -rf "$DEST"
mv "$TMP" "$DEST"
trap - EXIT
# The venv's python finds its packages relative to itself, so the moved venv works; check it.
if ! "$DEST/bin/python" - <<'EOF'
from importlib.metadata import version
from datatrove.data import Document
from datatrove.pipeline.filters import C4QualityFilter, GopherQualityFilter, GopherRepetitionFilter
from datatrove.utils.text import split_into_words

assert version("datatrove") == "0.10.1", version("datatrove")
assert split_into_words("They don't stop.") == ["They", "do", "n't", "stop", "."]
GopherQualityFilter().filter(Document(text="a b", id="0"))
EOF
then
    rm -rf "$DEST"
    echo "side_install_datatrove: the installed datatrove does not work; removed $DEST" >&2
    exit 1
fi
touch "$DEST/$STAMP"
echo "side_install_datatrove: installed datatrove 0.10.1 (with spaCy 3.8.18) in $DEST"
