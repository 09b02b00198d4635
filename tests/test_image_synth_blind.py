"""The blind photo-library generator builds valid image.v1 events, the same ones for the same seeds."""

import orjson

from schemas import validate
from tests.image_synth_blind import BlindWorld, blind_samples


def test_blind_library_is_valid_and_deterministic():
    world = BlindWorld(seed=7, dim=256)
    library = world.library(150, seed=1)
    assert len(library.events) == len(library.truth) == 150
    for event in library.events:
        validate(orjson.loads(orjson.dumps(event)), expected=("image.v1",))
        truth = library.truth[event["image_id"]]
        assert len(event.get("faces", [])) == len(truth.persons)
        assert truth.face_consent == event["consent"]["faces"]
        assert len(event["embedding"]) == 256
    assert world.people >= 20
    assert len(blind_samples(library)) == 150
    named = set().union(*(BlindWorld.vocabulary(theme) for theme in world.themes))
    assert all(set(group) <= named for group in world.synonym_groups)

    again = BlindWorld(seed=7, dim=256).library(150, seed=1)
    assert orjson.dumps(again.events) == orjson.dumps(library.events) and again.truth == library.truth
    other = BlindWorld(seed=7, dim=256).library(150, seed=2)
    assert orjson.dumps(other.events) != orjson.dumps(library.events)
