"""Prometheus metrics, all in one place so names and labels stay consistent (learnstream_ prefix, seconds,
_total). Labels carry topics, families, reasons and backends, never a user, session or text."""

from prometheus_client import Counter, Gauge, Histogram

from learnstream import topics
from schemas import DLQ_REASONS

CONSUMED = Counter("learnstream_events_consumed_total", "Records consumed", ["topic", "group"])
PRODUCED = Counter("learnstream_events_produced_total", "Records produced", ["topic"])
DLQ = Counter("learnstream_dlq_total", "Events sent to a dead-letter topic", ["topic", "reason"])
REFUSED = Counter("learnstream_refused_records_total",
                  "Records refused on a topic without a DLQ (logged by position; the reader goes on)", ["topic", "reason"])
# One name per count: a metric that counts what a status field shows is named after it (skipped_no_consent,
# skipped_erased); the status' samples_stored is what the store holds now (erasure removes), this counts writes.
SKIPPED_NO_CONSENT = Counter("learnstream_skipped_no_consent_total", "Events without training consent", ["family"])
SKIPPED_ERASED = Counter("learnstream_skipped_erased_total",
                         "Events of an erased person appended before their erasure and still in flight: not sealed, "
                         "not stored", ["family"])
SAMPLES_WRITTEN = Counter("learnstream_samples_written_total", "Anonymized samples written to the store", ["family"])
ERASURES = Counter("learnstream_erasures_total", "Erasure requests applied", ["stage"])
_PARTITION = ["topic", "partition", "group"]
LAG_RECORDS = Gauge("learnstream_consumer_lag_records", "End offset minus committed offset", _PARTITION)
END_OFFSET = Gauge("learnstream_consumer_end_offset", "Partition end offset (high watermark)", _PARTITION)
COMMITTED_OFFSET = Gauge("learnstream_consumer_committed_offset", "Offset committed by the group", _PARTITION)
LAG_SECONDS = Gauge(
    "learnstream_consumer_lag_seconds", "Age of the last record processed while behind; 0 when caught up", _PARTITION
)
NAMES_NOT_REMOVED = Gauge(
    "learnstream_anonymizer_names_disabled", "1 when no NER model is loaded: names are NOT being removed"
)
TRAINING_RUNS = Counter("learnstream_training_runs_total", "Training runs finished", ["family", "decision"])
# reason: "error" (the run failed; retried) or "missing_dependency" (the ml extra is not installed: counted once
# per trainer start, the samples wait for it).
TRAINING_FAILURES = Counter(
    "learnstream_training_failures_total", "Training runs that failed or could not start", ["family", "reason"]
)
TRAINING_FAILURE_REASONS = ("error", "missing_dependency")
TRAINING_SECONDS = Histogram(
    "learnstream_training_duration_seconds", "Training run duration", ["family"],
    buckets=(1, 5, 15, 30, 60, 120, 300, 600, 1800, 3600),
)
TRAINING_LOSS = Gauge("learnstream_training_last_loss", "Eval loss of the last run", ["family"])
TRAINING_PROGRESS = Gauge("learnstream_training_progress_ratio", "Steps done / steps planned", ["family"])
SERVED_VERSION = Gauge("learnstream_served_version", "Model version being served", ["family"])
BACKGROUND_RESTARTS = Counter(
    "learnstream_background_restarts_total", "Supervised background tasks restarted after an error", ["task"]
)
TRANSIENT_RETRIES = Counter(
    "learnstream_transient_retries_total",
    "Batches a stage retried because the broker, the network or the disk failed for now (learnstream/transient.py)",
    ["group", "cause"],
)
SWAPS = Counter("learnstream_model_swaps_total", "Hot swaps", ["family", "result"])
SWAP_SECONDS = Histogram("learnstream_model_swap_seconds", "Verify + load + warm-up time of a swap", ["family"])
REQUEST_SECONDS = Histogram("learnstream_chat_request_seconds", "Chat latency", ["backend"])
# The local chat model's generation engine (serving/engine.py): tokens/s is rate(CHAT_TOKENS).
CHAT_BATCH_SIZE = Histogram("learnstream_chat_batch_size", "Sequences decoded together, per decoding step",
                            buckets=(1, 2, 3, 4, 6, 8, 12, 16))
CHAT_TTFT_SECONDS = Histogram("learnstream_chat_ttft_seconds", "Local model: request queued to its first token",
                              buckets=(0.05, 0.1, 0.25, 0.5, 1, 2, 5, 10))
CHAT_TOKENS = Counter("learnstream_chat_tokens_total", "Reply tokens the local chat model generated")
SAFETY_FLAGS = Counter("learnstream_safety_flags_total", "Turns answered by the safety path, by the layer that flagged",
                       ["category", "layer"])


# The backends a chat reply can come from (REQUEST_SECONDS): a model here, the remote API, or the safety path.
REPLY_BACKENDS = ("local", "remote", "safety")


def start_at_zero(families: tuple[str, ...]) -> None:
    """Create the label children we know of, so a fresh stack's dashboards and alerts read 0, not "no data", and
    increase() sees the very first event of each."""
    for source in (*(t for f in families for t in (topics.raw(f), topics.anon(f))), topics.ERASURE_REQUESTS):
        for reason in DLQ_REASONS:
            DLQ.labels(topic=source, reason=reason)
    for family in families:
        for decision in ("promoted", "rejected"):
            TRAINING_RUNS.labels(family=family, decision=decision)
        for reason in TRAINING_FAILURE_REASONS:
            TRAINING_FAILURES.labels(family=family, reason=reason)
        SAMPLES_WRITTEN.labels(family=family)
        SKIPPED_NO_CONSENT.labels(family=family)
        SKIPPED_ERASED.labels(family=family)
        for result in ("ok", "failed", "rejected"):
            SWAPS.labels(family=family, result=result)


def start_serving_at_zero(safety_flags: list[tuple[str, str]]) -> None:
    """The serving role's share of start_at_zero: replies by backend, safety flags by (category, layer)."""
    for backend in REPLY_BACKENDS:
        REQUEST_SECONDS.labels(backend=backend)
    for category, layer in safety_flags:
        SAFETY_FLAGS.labels(category=category, layer=layer)
