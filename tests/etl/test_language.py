"""The `language` stage: py3langid's packaged model, a language and score on every document."""
from __future__ import annotations

import pytest

from etl.stages.base import StageContext
from etl.stages.language import Language, LanguageParams, identify
from shards.config import ConfigError, from_dict

SAMPLES = {
    "en": "The committee approved the budget after a short debate about the new cycling lanes.",
    "de": "Der Ausschuss hat den Haushalt nach einer kurzen Debatte über die neuen Radwege genehmigt.",
    "fr": "Le comité a approuvé le budget après un court débat sur les nouvelles pistes cyclables.",
    "es": "El comité aprobó el presupuesto tras un breve debate sobre los nuevos carriles bici.",
    "it": "Il comitato ha approvato il bilancio dopo un breve dibattito sulle nuove piste ciclabili.",
    "pt": "O comitê aprovou o orçamento depois de um breve debate sobre as novas ciclovias.",
    "nl": "De commissie keurde de begroting goed na een kort debat over de nieuwe fietspaden.",
    "ru": "Комитет утвердил бюджет после короткой дискуссии о новых велосипедных дорожках.",
    "ja": "委員会は新しい自転車レーンについての短い議論の後、予算を承認した。",
}


def test_identifies_languages_with_the_packaged_model():
    params = LanguageParams()
    found = identify(list(SAMPLES.values()), params)
    assert [lang for lang, _ in found] == list(SAMPLES)
    assert all(score > 0.9 for _, score in found)


def test_text_without_letters_is_undetermined():
    assert identify(["12 345 - 678", "", "!!!"], LanguageParams()) == [("und", 0.0)] * 3


def test_low_confidence_becomes_undetermined():
    language, score = identify(["ok"], LanguageParams(min_confidence=0.9))[0]
    assert language == "und" and score < 0.9


def test_stage_adds_columns_and_rejects_other_languages(spark):
    rows = [(f"doc-{lang}", "web", text, "h", None) for lang, text in SAMPLES.items()] + [("doc-digits", "web", "2024 1999", "h", None)]
    docs = spark.createDataFrame(rows, "id string, source string, text string, content_hash string, meta map<string,string>")
    stage = Language(from_dict(LanguageParams, {"allowed": ["en", "de"]}, "language"))
    out = {r["id"]: r for r in stage.run(docs, StageContext(spark, "", "", "test")).docs.collect()}
    assert out["doc-en"]["reason"] is None and out["doc-de"]["reason"] is None
    assert out["doc-fr"]["reason"] == "language" and out["doc-fr"]["detail"].startswith("fr (")
    assert out["doc-digits"]["reason"] == "language_undetermined"
    assert {r["language"] for r in out.values()} == set(SAMPLES) | {"und"}
    assert all(0.0 <= r["language_score"] <= 1.0 for r in out.values())


@pytest.mark.parametrize(
    "params, message",
    [
        ({"allowed": ["english"]}, "unknown language codes"),
        ({"allowed": ["en"], "candidates": ["de", "fr"]}, "no language in common"),
        ({"min_confidence": 1.5}, "min_confidence"),
        ({"max_chars": 0}, "max_chars"),
    ],
)
def test_bad_params_are_reported(params, message):
    with pytest.raises(ConfigError, match=message):
        from_dict(LanguageParams, params, "language")
