"""The gate-camera pipeline of ``examples.gates.app``, cut into segments served by workers.

    caller    prepare                                  decoding (the source) and resizing
    worker 1  detect >> find_plates                    the text detector and its boxes
    worker 2  split >> recognize >> read_text >> look_again >> plate_text >> regroup
                                                       the recogniser, one item per crop
    caller    track >> annotate >> record >> events >> write_events >> webhook

The tracker stays in the caller: a worker serves its segment for as long as it lives, across
runs, so a keyed block there never sees a run's end and would never flush the plates still in
view (``Block.evict``), close the videos or report its counts. The side effects (the video files,
the events file, the webhook) stay in the caller too: inside, delivery is at least once.

A worker builds the pipeline with :func:`pipeline` from the environment the caller gives it
(:data:`ENV_OUT`, :data:`ENV_FORMATS`), so that it is the caller's pipeline: the same blocks and
options, hence the same graph hash (a worker with another one exits with status 2).
"""

from __future__ import annotations

import os
from pathlib import Path

import aioflow as af
from examples.gates import app as gates
from examples.gates import plates

#: the blocks the caller runs itself (at the start and at the end of the pipeline)
LOCAL = frozenset({"prepare", "track", "annotate", "record", "events", "write_events", "webhook"})
#: the workers' segments (consecutive blocks), one worker process each
SEGMENTS: tuple[tuple[str, ...], ...] = (
    ("detect", "find_plates"),
    ("split", "recognize", "read_text", "look_again", "plate_text", "regroup"),
)
#: where the annotated videos go (read by the caller and the workers alike)
ENV_OUT = "AIOFLOW_GATES_OUT"
#: the plate formats to accept, comma-separated (``plates.parse_formats``; empty: any plate)
ENV_FORMATS = "AIOFLOW_GATES_FORMATS"


def pipeline() -> af.Pipeline:
    """The flagship's pipeline with the options in the environment (the workers' target)."""
    return gates.build(
        out=Path(os.environ.get(ENV_OUT, "out/distributed")),
        formats=plates.parse_formats(os.environ.get(ENV_FORMATS, "")),
    )
