"""The Apache Kafka broker's jars: resolved from Maven Central once, then served from a local cache."""

from __future__ import annotations

import logging
import os
import shutil
import subprocess
import tempfile
from pathlib import Path

logger = logging.getLogger(__name__)

KAFKA_VERSION = "4.3.1"
LOG4J_VERSION = "2.24.3"

# The kafka_2.13 pom brings no logging backend. Kafka logs through the slf4j 1.7 API, whose log4j2
# binding is log4j-slf4j-impl (log4j-slf4j2-impl would leave the broker silent).
ARTIFACTS = (
    f"org.apache.kafka:kafka_2.13:{KAFKA_VERSION}",
    f"org.apache.logging.log4j:log4j-api:{LOG4J_VERSION}",
    f"org.apache.logging.log4j:log4j-core:{LOG4J_VERSION}",
    f"org.apache.logging.log4j:log4j-slf4j-impl:{LOG4J_VERSION}",
)

# Written last into a complete cache, holding ARTIFACTS: a missing or different marker means the
# cache is partial or from another pin and is fetched again.
COMPLETE_MARKER = "COMPLETE"

# A cold ~/.m2 on a slow link needs a few minutes for the ~45 jars; longer than this is a hang.
DOWNLOAD_TIMEOUT_S = 900


class JarsUnavailable(RuntimeError):
    """Maven is missing or could not resolve the broker's jars."""


def default_jar_cache() -> Path:
    """LEARNSTREAM_JAR_CACHE if set, else ~/.cache/learnstream/kafka-<version>."""
    override = os.environ.get("LEARNSTREAM_JAR_CACHE")
    if override:
        return Path(override).expanduser()
    return Path.home() / ".cache" / "learnstream" / f"kafka-{KAFKA_VERSION}"


def ensure_jars(cache: Path) -> Path:
    """Return `cache` holding every jar of ARTIFACTS, downloading them first if needed."""
    if _is_complete(cache):
        return cache
    mvn = shutil.which("mvn")
    if mvn is None:
        raise JarsUnavailable(
            "mvn not found: Maven fetches the Kafka jars on the first run "
            "(install it, e.g. `apt-get install maven`)"
        )
    cache.parent.mkdir(parents=True, exist_ok=True)
    logger.info("Downloading Apache Kafka %s jars into %s (first run only)", KAFKA_VERSION, cache)
    # A sibling temporary folder renamed into place, so an interrupted download never looks complete.
    staging = Path(tempfile.mkdtemp(prefix=f".{cache.name}-", dir=cache.parent))
    try:
        _copy_dependencies(mvn, staging)
        (staging / COMPLETE_MARKER).write_text(_marker_text())
        staging.chmod(0o755)  # mkdtemp makes it private; public jars can serve every user of a shared cache
        _replace(cache, staging)
    finally:
        shutil.rmtree(staging, ignore_errors=True)
    logger.info("Kafka jars ready in %s", cache)
    return cache


def _marker_text() -> str:
    return "\n".join(ARTIFACTS) + "\n"


def _is_complete(cache: Path) -> bool:
    marker = cache / COMPLETE_MARKER
    return marker.is_file() and marker.read_text() == _marker_text()


def _pom() -> str:
    dependencies = "\n".join(
        "    <dependency><groupId>{}</groupId><artifactId>{}</artifactId><version>{}</version></dependency>".format(
            *coordinates.split(":")
        )
        for coordinates in ARTIFACTS
    )
    return f"""<project xmlns="http://maven.apache.org/POM/4.0.0">
  <modelVersion>4.0.0</modelVersion>
  <groupId>learnstream</groupId><artifactId>kafka-broker-jars</artifactId><version>1</version>
  <packaging>pom</packaging>
  <dependencies>
{dependencies}
  </dependencies>
</project>
"""


def _copy_dependencies(mvn: str, output_dir: Path) -> None:
    with tempfile.TemporaryDirectory(prefix="learnstream-pom-") as work:
        pom = Path(work) / "pom.xml"
        pom.write_text(_pom())
        goal = ["dependency:copy-dependencies", f"-DoutputDirectory={output_dir}", "-DincludeScope=runtime"]
        command = [mvn, "-q", "-B", "-f", str(pom), *goal]
        try:
            result = subprocess.run(
                command, capture_output=True, text=True, timeout=DOWNLOAD_TIMEOUT_S, check=False
            )
        except subprocess.TimeoutExpired as exc:
            raise JarsUnavailable(f"Kafka jar download timed out after {exc.timeout:.0f} s") from exc
    if result.returncode != 0:
        tail = "\n".join((result.stdout + result.stderr).strip().splitlines()[-20:])
        raise JarsUnavailable(f"Kafka jar download failed (mvn exit {result.returncode}):\n{tail}")


def _replace(cache: Path, staging: Path) -> None:
    """Move the finished download to `cache`; a concurrent run may have completed it first."""
    if cache.exists() and not _is_complete(cache):
        shutil.rmtree(cache)  # partial or stale pin: only complete caches are ever used
    try:
        staging.rename(cache)
    except OSError:
        if not _is_complete(cache):
            raise
