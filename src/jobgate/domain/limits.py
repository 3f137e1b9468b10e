"""Limits on every count and string length a request may carry.

Each bounds what one request can make the gateway store, hold in memory or pass to
``exec``: a field over its limit is a 400 naming the field. The values are fixed (the
models are built at import time); body sizes are settings (see ``JOBGATE_MAX_BODY_BYTES``).
:data:`PUBLISHED` names them as the README's table does (TES service-info cannot carry
them: strict TES clients refuse keys the spec lacks); the OpenAPI schemas show them too.
"""

from __future__ import annotations

from typing import Annotated

from pydantic import Field, StrictBool, StrictInt

MAX_DEPTH = 64
"""Deepest nesting of objects/arrays in a JSON or YAML body."""
MAX_CONTAINERS = 200_000
"""Most objects plus arrays in one body (each costs ~60 bytes of memory for 2 of input)."""
MAX_VALUES = 1_000_000
"""Most values (members of objects and arrays) in one body: each costs time to check."""
MAX_YAML_NODES = 50_000
"""Most YAML nodes (scalars, sequences, mappings) in one body: YAML parses slowly."""

NAME = 1024
"""Task/job name, input/output name."""
DESCRIPTION = 16 * 1024
TAGS = 256
"""Tags (TES) or labels (native), counted together."""
TAG_KEY = 256
TAG_VALUE = 4096
EXECUTORS = 64
ARGS = 4096
"""Arguments of one executor command."""
ARG = 128 * 1024
"""One command argument or native ``script``: Linux refuses longer ones (MAX_ARG_STRLEN)."""
ENV = 1024
"""Environment variables of one executor."""
ENV_KEY = 1024
ENV_VALUE = 128 * 1024
INPUTS = 4096
OUTPUTS = 4096
VOLUMES = 256
URL = 8192
PATH = 4096
"""Container path (also workdir, stdin/stdout/stderr, volumes, path_prefix)."""
IMAGE = 1024
ZONES = 64
ZONE = 256
BACKEND_PARAMETERS = 256
BACKEND_PARAMETER_KEY = 256
BACKEND_PARAMETER_VALUE = 4096
BACKEND_NAME = 256
IDS = 10_000
"""Job ids in one bulk request (cancel, start, patch, …)."""
ID = 256
BULK_JOBS = 10_000
"""Jobs in one ``/api/v1/jobs/bulk`` submission."""
TEXT = 4096
"""Other short strings: app_status, workflow_id, search values, cursors, token names."""
FILTERS = 50
"""Filters in one search or summary (TES ``tag_key`` filters too): each adds a condition."""
IN_VALUES = 1000
"""Values of one ``in``/``not_in`` search filter."""
SEARCH_VALUE = 1024
"""One search filter value, and a ``labels.<key>`` field name."""
WORKSTEP_DATA = 4096
"""Entries of a workstep's ``input_data`` or ``output_data``."""
GROUPS = 64
"""Groups of one service token."""
CPU_CORES = 1_000_000
"""Largest ``cpu_cores`` (also workstep ``cpu_cores``)."""

GB = 1_000_000_000
"""Largest ``ram_gb``/``disk_gb`` (also workstep ``memory_gb``): in bytes it still fits 63 bits."""

PUBLISHED: dict[str, int] = {
    "body_depth": MAX_DEPTH,
    "body_containers": MAX_CONTAINERS,
    "body_values": MAX_VALUES,
    "yaml_nodes": MAX_YAML_NODES,
    "name_length": NAME,
    "description_length": DESCRIPTION,
    "tags": TAGS,
    "tag_key_length": TAG_KEY,
    "tag_value_length": TAG_VALUE,
    "executors": EXECUTORS,
    "command_args": ARGS,
    "command_arg_length": ARG,
    "env": ENV,
    "env_key_length": ENV_KEY,
    "env_value_length": ENV_VALUE,
    "inputs": INPUTS,
    "outputs": OUTPUTS,
    "volumes": VOLUMES,
    "url_length": URL,
    "path_length": PATH,
    "image_length": IMAGE,
    "zones": ZONES,
    "zone_length": ZONE,
    "backend_parameters": BACKEND_PARAMETERS,
    "backend_parameter_key_length": BACKEND_PARAMETER_KEY,
    "backend_parameter_value_length": BACKEND_PARAMETER_VALUE,
    "bulk_jobs": BULK_JOBS,
    "bulk_ids": IDS,
    "id_length": ID,
    "backend_name_length": BACKEND_NAME,
    "text_length": TEXT,
    "search_filters": FILTERS,
    "search_in_values": IN_VALUES,
    "search_value_length": SEARCH_VALUE,
    "cpu_cores": CPU_CORES,
    "ram_disk_gb": GB,
}


Name = Annotated[str, Field(max_length=NAME)]
Description = Annotated[str, Field(max_length=DESCRIPTION)]
Url = Annotated[str, Field(max_length=URL)]
Text = Annotated[str, Field(max_length=TEXT)]
TagKey = Annotated[str, Field(max_length=TAG_KEY)]
TagValue = Annotated[str, Field(max_length=TAG_VALUE)]
Tags = Annotated[dict[TagKey, TagValue], Field(max_length=TAGS)]
Flag = StrictBool
"""A JSON boolean: ``0``, ``"yes"`` or ``"false"`` are refused, not coerced."""
Int = StrictInt
"""A JSON integer: ``false`` or ``"3"`` are refused, not coerced."""
