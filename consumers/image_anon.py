"""A validated image.v1 event -> the anonymized image.sample.v1 written to image.anon. Pure: no I/O, no state.

What leaves the raw topic, and why:
* owner: a keyed pseudonym of user_id (the caller's `pseudonymize`); image_id is the app's own reference, kept.
* caption: through the same text anonymizer as chat, with the image as the conversation.
* tags and category: lower-cased, whitespace collapsed, duplicates dropped. A label the text anonymizer would change
  (a person's or pet's name, a town, an employer) is dropped whole: a placeholder is useless as a label, and a
  location tag is the same information as the GPS we remove.
* embedding: kept. faces: kept (embedding and box only) ONLY with consent.faces true: face embeddings are biometric
  data, a GDPR special category; without that consent they are dropped here, before anything is stored.
* exif: a whitelist of camera settings (below), values that are small scalars only. Everything else goes: GPS*,
  every serial number, owner/artist/copyright names, maker notes (they hide serials), unique ids, software, and
  DateTimeOriginal with its offsets (a capture time and time zone place a person somewhere; nothing downstream
  needs them, and the event's ts already orders the samples).
The caller has already skipped events without training consent; unknown fields are never copied onward.
"""

from __future__ import annotations

import math
import re
from collections.abc import Callable
from typing import Any

SAMPLE_SCHEMA = "image.sample.v1"

# Canonical EXIF name -> the spellings it arrives under (exiftool, exifread, PIL), compared after _exif_key().
_EXIF_WHITELIST: dict[str, tuple[str, ...]] = {
    "Make": ("Make",),
    "Model": ("Model",),
    "ExposureTime": ("ExposureTime",),
    "ShutterSpeedValue": ("ShutterSpeedValue",),
    "FNumber": ("FNumber",),
    "ApertureValue": ("ApertureValue",),
    "ISOSpeedRatings": ("ISOSpeedRatings", "ISO", "PhotographicSensitivity"),
    "ExposureBiasValue": ("ExposureBiasValue", "ExposureCompensation"),
    "ExposureProgram": ("ExposureProgram",),
    "MeteringMode": ("MeteringMode",),
    "WhiteBalance": ("WhiteBalance",),
    "FocalLength": ("FocalLength",),
    "FocalLengthIn35mmFilm": ("FocalLengthIn35mmFilm", "FocalLengthIn35mmFormat"),
    "Orientation": ("Orientation",),
    "Flash": ("Flash",),
    "ColorSpace": ("ColorSpace",),
    "PixelXDimension": ("PixelXDimension", "ExifImageWidth", "ImageWidth"),
    "PixelYDimension": ("PixelYDimension", "ExifImageHeight", "ExifImageLength", "ImageLength", "ImageHeight"),
}
# Group prefixes some readers put before the tag name ("EXIF FNumber", "Image Model", "EXIF:Model").
_EXIF_GROUPS = ("exififd", "exif", "image", "ifd0")
_MAX_EXIF_TEXT = 64  # Make and Model are short; anything longer is not a camera name
_MAX_EXIF_NUMBERS = 4  # a rational is [numerator, denominator]; nothing whitelisted needs more
_MAX_LABEL = 64  # a tag longer than this is a sentence, not a label


def _exif_key(name: str) -> str:
    return re.sub(r"[^a-z0-9]", "", name.lower())


_CANONICAL_BY_KEY = {_exif_key(alias): canonical for canonical, aliases in _EXIF_WHITELIST.items() for alias in aliases}


def normalize_tag(tag: str) -> str:
    """The stored form of a tag or category: lower case, single spaces. Serving looks tags up in this form."""
    return " ".join(tag.lower().split())


def anonymize_image_event(event: dict[str, Any], *, anonymize_text: Callable[[str, str], str],
                          pseudonymize: Callable[[str], str]) -> dict[str, Any]:
    """anonymize_text(text, conversation_key) replaces PII with placeholders; pseudonymize(user_id) is keyed."""
    image_id = event["image_id"]
    caption = event.get("caption")
    consent = event["consent"]
    category = _clean_labels([event["category"]], image_id, anonymize_text) if event.get("category") else []
    return {
        "schema": SAMPLE_SCHEMA,
        "event_id": event["event_id"],
        "ts": event["ts"],
        "owner": pseudonymize(event["user_id"]),
        "image_id": image_id,
        "caption": anonymize_text(caption, image_id) if caption else None,
        "tags": _clean_labels(event.get("tags") or [], image_id, anonymize_text),
        "category": category[0] if category else None,
        "embedding": _floats(event.get("embedding")),
        "faces": _faces(event.get("faces") or []) if consent.get("faces") is True else [],
        "exif": scrub_exif(event.get("exif") or {}),
    }


def _clean_labels(labels: list[str], image_id: str, anonymize_text: Callable[[str, str], str]) -> list[str]:
    """Normalized, de-duplicated labels, minus any the text anonymizer would change (it names someone or somewhere).

    All labels go through the anonymizer in one call, one per line (NER is the costly part)."""
    cleaned = list(dict.fromkeys(normalize_tag(label) for label in labels if len(label) <= _MAX_LABEL))
    cleaned = [label for label in cleaned if label]
    if not cleaned:
        return []
    # Original casing: capitals are what lets NER see a name.
    originals = {normalize_tag(label): " ".join(label.split()) for label in labels}
    checked = anonymize_text("\n".join(originals[label] for label in cleaned), image_id).split("\n")
    if len(checked) != len(cleaned):
        return []  # the anonymizer merged or split lines: no label can be vouched for
    return [label for label, after in zip(cleaned, checked) if after.strip() == originals[label]]


def _floats(vector: list[float] | None) -> list[float] | None:
    return None if vector is None else [float(value) for value in vector]


def _faces(faces: list[dict[str, Any]]) -> list[dict[str, Any]]:
    return [{"embedding": _floats(face["embedding"]), "box": face.get("box")} for face in faces
            if face.get("embedding")]


def scrub_exif(exif: dict[str, Any]) -> dict[str, Any]:
    """Only whitelisted camera settings, under their canonical names, with small scalar values; the first
    spelling of a setting wins. Nested groups (GPSInfo, MakerNote dictionaries) are never descended into."""
    kept: dict[str, Any] = {}
    for name, value in exif.items():
        canonical = _canonical_exif_name(name) if isinstance(name, str) else None
        if canonical is None or canonical in kept:
            continue
        clean = _exif_value(value)
        if clean is not None:
            kept[canonical] = clean
    return kept


def _canonical_exif_name(name: str) -> str | None:
    key = _exif_key(name)
    if key in _CANONICAL_BY_KEY:
        return _CANONICAL_BY_KEY[key]
    for group in _EXIF_GROUPS:
        if key.startswith(group) and key[len(group):] in _CANONICAL_BY_KEY:
            return _CANONICAL_BY_KEY[key[len(group):]]
    return None


def _exif_value(value: Any) -> Any:
    if isinstance(value, bool):
        return value
    if isinstance(value, (int, float)):
        return value if math.isfinite(value) else None
    if isinstance(value, str):
        text = " ".join(value.split())
        return text if 0 < len(text) <= _MAX_EXIF_TEXT and text.isprintable() else None
    if isinstance(value, list) and 0 < len(value) <= _MAX_EXIF_NUMBERS:
        numbers = [_exif_value(item) for item in value]
        if all(isinstance(item, (int, float)) and not isinstance(item, bool) for item in numbers):
            return numbers
    return None
