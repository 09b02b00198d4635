"""The image embedding dimension: configured, else decided by the first image samples (most of them, so one odd
event first does not decide it), recorded once in the data dir and used by every anonymizer and after restarts."""

from __future__ import annotations

import orjson

from consumers.privacy import Anonymizer
from learnstream.embedding_dim import EmbeddingDim
from tests.test_dlq import image_event

KEY = b"test-key"


def _anonymizer(path, *, configured: int | None = None) -> Anonymizer:
    return Anonymizer(key=KEY, ner_model=None, max_event_bytes=64 * 1024,
                      embedding_dim=EmbeddingDim(configured=configured, path=path))


def _images(*lengths: int, consent: bool = True) -> list[bytes]:
    return [orjson.dumps(image_event(event_id=f"img-{n}-{length}", image_id=f"i-{n}", embedding=[0.5] * length,
                                     consent={"training": consent}))
            for n, length in enumerate(lengths)]


def _kinds(outcomes) -> list[str]:
    return [o.kind for o in outcomes]


def test_one_odd_image_event_first_does_not_send_the_good_ones_after_it_to_the_dlq(tmp_path):
    path = tmp_path / "embedding_dim.json"
    outcomes = _anonymizer(path).process("image", _images(3, 8, 8, 8))
    assert _kinds(outcomes) == ["invalid", "sample", "sample", "sample"]
    assert outcomes[0].error.field == "embedding" and "8 numbers" in outcomes[0].error.rule
    assert orjson.loads(path.read_bytes()) == {"embedding_dim": 8}


def test_the_recorded_dimension_holds_for_every_replica_and_after_a_restart(tmp_path):
    path = tmp_path / "embedding_dim.json"
    first, second = _anonymizer(path), _anonymizer(path)  # two replicas on one data dir, both started undecided
    assert _kinds(first.process("image", _images(8))) == ["sample"]
    assert _kinds(second.process("image", _images(3, 3, 8))) == ["invalid", "invalid", "sample"]
    restarted = _anonymizer(path)
    assert restarted.embedding_dim.value == 8
    assert _kinds(restarted.process("image", _images(3, 8))) == ["invalid", "sample"]


def test_two_replicas_deciding_at_once_agree_on_the_first_record(tmp_path):
    path = tmp_path / "embedding_dim.json"
    one, other = EmbeddingDim(path=path), EmbeddingDim(path=path)
    assert one.decide(8) == 8 and other.decide(3) == 8 and other.value == 8


def test_events_refused_or_skipped_for_another_reason_do_not_decide_it(tmp_path):
    path = tmp_path / "embedding_dim.json"
    anonymizer = _anonymizer(path)
    refused = orjson.dumps(image_event(embedding=[0.5] * 3, faces=[{"embedding": [0.1], "box": [1, 2]}]))
    assert _kinds(anonymizer.process("image", [refused, *_images(3, consent=False)])) == ["invalid", "skip"]
    assert not path.exists()
    assert _kinds(anonymizer.process("image", _images(8, 3))) == ["sample", "invalid"]


def test_a_configured_dimension_wins_over_a_recorded_one(tmp_path):
    path = tmp_path / "embedding_dim.json"
    EmbeddingDim(path=path).decide(3)
    assert _kinds(_anonymizer(path, configured=8).process("image", _images(3, 8))) == ["invalid", "sample"]
