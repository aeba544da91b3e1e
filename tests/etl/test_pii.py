"""The `pii` stage's recognisers and actions, in plain Python (the Spark run is in test_pii_pipeline.py)."""
from __future__ import annotations

import re
import socket

import pytest

from etl.devtools.pii_eval import PHONE_REGIONS, generate, lookalike_set, phone_recall_set, score
from etl.stages.pii import PATTERN_ENTITIES, PiiParams, PiiRedactor, _safe_error, hash_salt
from shards.config import ConfigError, from_dict

SALT = "a-test-salt-of-32-characters-xyz"


def _redactor(**params) -> PiiRedactor:
    config = from_dict(PiiParams, params, "pii")
    return PiiRedactor(config, hash_salt(config))


@pytest.fixture(scope="module")
def default_redactor():
    return _redactor()


def test_each_pattern_type_meets_recall_and_precision(default_redactor):
    docs = generate(n_per_type=60, n_lookalike_docs=150, seed=7)
    found = default_redactor.find([d.text for d in docs])
    report = score(docs, [[(r.entity_type, r.start, r.end) for r in results] for results in found])
    lines = [f"{e:15s} gold={s['gold']:3d} predicted={s['predicted']:3d} recall={s['recall']:.3f} precision={s['precision']:.3f}"
             for e, s in report.items()]
    print("\n" + "\n".join(lines))
    assert set(report) == set(PATTERN_ENTITIES), "\n".join(lines)
    for entity, stats in report.items():
        assert stats["recall"] >= 0.95, f"{entity} recall too low:\n" + "\n".join(lines)
        assert stats["precision"] >= 0.90, f"{entity} precision too low:\n" + "\n".join(lines)


def test_look_alikes_alone_are_not_flagged(default_redactor):
    docs = [d for d in generate(n_per_type=0, n_lookalike_docs=300, seed=11)]
    flagged = [(d.text, r.entity_type) for d, results in zip(docs, default_redactor.find([d.text for d in docs]))
               for r in results]
    assert len(flagged) <= 3, flagged  # at most 1% of look-alike documents


def test_phone_recall_on_numbers_spelled_by_phonenumbers_and_lookalikes_stay(default_redactor):
    """Numbers spelled by python-phonenumbers' formatters (national, international, E.164; US under area
    codes not assigned today, Indian mobiles also 5-5), half after a phone word: recall >= 0.97 in each
    region. Dates, versions, order numbers, ISBNs, bad-Luhn cards, prices and times: >= 0.95 of each kept."""
    phones = phone_recall_set(n_per_region=60, seed=17)
    found = default_redactor.find([d.text for d in phones])
    recall = {}
    for region_index, region in enumerate(PHONE_REGIONS):
        part = slice(region_index * 60, (region_index + 1) * 60)
        report = score(phones[part], [[(r.entity_type, r.start, r.end) for r in f] for f in found[part]])
        recall[region] = report["PHONE"]["recall"]
    kept = {}
    for kind, docs in lookalike_set(n_per_kind=60, seed=19).items():
        results = default_redactor.find([d.text for d in docs])
        kept[kind] = sum(not any(r.start < d.spans[0][2] and d.spans[0][1] < r.end for r in found_in)
                         for d, found_in in zip(docs, results)) / len(docs)
    print(f"\nphone recall {recall}\nlook-alikes kept {kept}")
    assert all(r >= 0.97 for r in recall.values()), recall
    assert all(k >= 0.95 for k in kept.values()), kept


def test_analysis_needs_no_network_and_no_spacy_model(monkeypatch):
    from etl.text import pii_recognizers

    attempts = []

    def refuse(*args, **kwargs):
        attempts.append(args)
        raise OSError("network disabled in this test")

    monkeypatch.setattr(socket.socket, "connect", refuse)
    monkeypatch.setattr(socket, "getaddrinfo", refuse)
    pii_recognizers.offline_domain_extractor.cache_clear()  # tldextract is built afresh, without network
    redactor = _redactor()
    text, counts, _, _ = redactor.process(["Write to jane.doe@example.co.uk or ops@startup.io today."])[0]
    assert counts == {"EMAIL": 2} and "<EMAIL>" in text
    assert attempts == []
    assert isinstance(redactor.batch_analyzer.analyzer_engine.nlp_engine, pii_recognizers.WordNlpEngine)


def test_the_redactor_loads_without_torch_though_it_is_installed():
    """presidio and spaCy import torch and transformers when they can (etl/text/torch_hidden.py):
    seconds in every worker of the pii stage, for nothing Kiln uses. Checked in a fresh interpreter."""
    import subprocess
    import sys

    code = ("import sys, importlib.util\n"
            "from etl.stages.pii import PiiParams, PiiRedactor\n"
            "redactor = PiiRedactor(PiiParams(), None)\n"
            "assert redactor.process(['mail a@example.com'])[0][1] == {'EMAIL': 1}\n"
            "assert importlib.util.find_spec('torch') and importlib.util.find_spec('transformers')\n"
            "print(sorted(m for m in ('torch', 'transformers') if m in sys.modules))\n"
            "import torch  # importable again after presidio loaded\n")
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stderr[-2000:]
    assert done.stdout.strip() == "[]"


def test_actions_redact_mask_hash_and_drop(monkeypatch):
    monkeypatch.setenv("KILN_TEST_SALT", SALT)
    redactor = _redactor(actions={"EMAIL": "hash", "PHONE": "mask", "SECRET": "drop"}, hash_salt_env="KILN_TEST_SALT")
    texts = [
        "Mail ann@example.com or call (415) 555-0132. SSN: 219-09-9999.",
        "Ann again: ann@example.com, and bob@example.com.",
        "The key AKIAIOSFODNN7EXAMPLE leaked.",
    ]
    (first, c1, r1, _), (second, c2, r2, _), (third, c3, r3, d3) = redactor.process(texts)
    tokens_first = re.findall(r"<EMAIL:[0-9a-f]{16}>", first)
    tokens_second = re.findall(r"<EMAIL:[0-9a-f]{16}>", second)
    assert len(tokens_first) == 1 and tokens_first[0] == tokens_second[0] != tokens_second[1]  # stable, distinct
    assert "*" * len("(415) 555-0132") in first and "<US_SSN>" in first
    assert c1 == {"EMAIL": 1, "PHONE": 1, "US_SSN": 1} and r1 is None and r2 is None
    assert "AKIAIOSFODNN7EXAMPLE" not in third and "<SECRET>" in third  # dropped, and still redacted
    assert (r3, d3, c3) == ("pii", "contains SECRET", {"SECRET": 1})
    for text in (first, second):
        assert "ann@example.com" not in text and "555-0132" not in text


def test_hash_depends_on_the_salt():
    params = from_dict(PiiParams, {"default_action": "hash"}, "pii")
    one = PiiRedactor(params, SALT.encode()).process(["ann@example.com"])[0][0]
    two = PiiRedactor(params, (SALT + "2").encode()).process(["ann@example.com"])[0][0]
    assert one != two and one.startswith("<EMAIL:")


def test_density_threshold_rejects_contact_dumps():
    redactor = _redactor(max_density=0.3)
    dump = " ".join(f"user{i}@example.com" for i in range(20))
    prose = "We met at the station and talked about the weather for an hour. " * 5 + "Mail ann@example.com."
    (dump_text, _, reason, detail), (_, _, prose_reason, _) = redactor.process([dump, prose])
    assert reason == "pii_density" and "max_density 0.3" in detail
    assert "@" not in dump_text  # rejected documents leave the stage redacted too
    assert prose_reason is None


def test_custom_recognizer_with_context_words():
    redactor = _redactor(recognizers=[{
        "entity": "EMPLOYEE_ID", "patterns": [r"\bE\d{6}\b"], "context": ["employee", "staff"], "score": 0.2,
    }])
    with_context, without = redactor.process(["Her employee number is E123456.", "Model E123456 ships in May."])
    assert with_context[0] == "Her employee number is <EMPLOYEE_ID>." and with_context[1] == {"EMPLOYEE_ID": 1}
    assert without[0] == "Model E123456 ships in May." and without[1] == {}


def test_ner_model_from_a_folder_finds_people_and_places(tmp_path):
    spacy = pytest.importorskip("spacy")
    nlp = spacy.blank("en")
    ruler = nlp.add_pipe("entity_ruler")
    ruler.add_patterns([
        {"label": "PERSON", "pattern": [{"LOWER": "ada"}, {"LOWER": "lovelace"}]},
        {"label": "GPE", "pattern": "London"},
        {"label": "ORG", "pattern": "Analytical Society"},
    ])
    nlp.to_disk(tmp_path / "tiny_ner")
    redactor = _redactor(entities=["EMAIL", "PERSON", "LOCATION", "ORGANIZATION"], ner_model=str(tmp_path / "tiny_ner"))
    text, counts, _, _ = redactor.process(["Ada Lovelace of the Analytical Society lived in London; ada@example.com."])[0]
    assert text == "<PERSON> of the <ORGANIZATION> lived in <LOCATION>; <EMAIL>."
    assert counts == {"PERSON": 1, "ORGANIZATION": 1, "LOCATION": 1, "EMAIL": 1}


def test_missing_ner_model_is_refused_not_downloaded():
    with pytest.raises(ValueError, match="never downloads"):
        _redactor(entities=["PERSON"], ner_model="en_core_web_lg")


@pytest.mark.parametrize(
    "params, message",
    [
        ({"entities": ["EMAIL", "PASSPORT"]}, "unknown entity type 'PASSPORT'"),
        ({"entities": ["PERSON"]}, "need a spaCy NER model"),
        ({"actions": {"IBAN": "shred"}}, "must be one of"),
        ({"entities": ["EMAIL"], "actions": {"PHONE": "mask"}}, "'PHONE' is not among the entities"),
        ({"recognizers": [{"entity": "X_ID", "patterns": ["(unclosed"]}]}, "invalid regular expression"),
        ({"recognizers": [{"entity": "lower", "patterns": ["x"]}]}, "UPPER_SNAKE_CASE"),
        ({"recognizers": [{"entity": "EMAIL", "patterns": ["x"]}]}, "built-in entity types"),
        ({"phone_regions": ["US", "XX"]}, "unknown region codes"),
        ({"max_density": 0}, "max_density"),
    ],
)
def test_bad_params_are_reported_with_their_key(params, message):
    with pytest.raises(ConfigError, match=re.escape(message) if "(" not in message else message):
        from_dict(PiiParams, params, "pii")


def test_hash_action_needs_a_salt_and_never_prints_it(monkeypatch):
    params = from_dict(PiiParams, {"actions": {"EMAIL": "hash"}}, "pii")
    monkeypatch.delenv("KILN_PII_SALT", raising=False)
    with pytest.raises(ValueError, match="KILN_PII_SALT"):
        hash_salt(params)
    monkeypatch.setenv("KILN_PII_SALT", "short-secret")
    with pytest.raises(ValueError, match="at least 16") as err:
        hash_salt(params)
    assert "short-secret" not in str(err.value)
    monkeypatch.setenv("KILN_PII_SALT", SALT)
    assert hash_salt(params) == SALT.encode()


def test_errors_withhold_the_matched_text():
    try:
        raise ValueError("Did not find word 'jane.doe@example.com' in the list of tokens")
    except ValueError as err:
        safe = _safe_error(["web/doc-1"], err)
    assert "jane.doe@example.com" not in str(safe)
    assert "web/doc-1" in str(safe) and "ValueError" in str(safe)
