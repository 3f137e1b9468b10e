"""Moving a task's inputs in and its outputs out, over fsspec stores, with the guards.

Schemes: inline ``content``; ``file://`` (or a bare absolute path) under the operator's
allowed directories; ``http(s)://`` (GET in, PUT out under configured prefixes); ``s3://``
(s3fs; endpoint from ``JOBGATE_S3_ENDPOINT_URL``, credentials from ``AWS_*``); ``ftp://``
(fsspec's FTP filesystem); ``sandbox:<sha256>`` for inputs uploaded to
``/api/v1/sandboxes``. Anything else is accepted at create and fails here with a clear
line, as TES clients expect. Network hosts pass the SSRF guard (:mod:`.guard`).

Modules: :mod:`.stager` (the entry point), :mod:`.inputs`, :mod:`.outputs`, :mod:`.stores`
(URL → store), :mod:`.local`, :mod:`.web`, :mod:`.filesystems` (S3, FTP), :mod:`.guard`,
:mod:`.transfer` (chunked copies, retries), :mod:`.mover`, :mod:`.sandbox`, :mod:`.tarball`
(checked extraction of untrusted archives), :mod:`.packing`.
"""

from jobgate.staging.local import local_path
from jobgate.staging.outputs import PartialStagingError
from jobgate.staging.packing import make_output_dirs, pack_outputs
from jobgate.staging.sandbox import SHA256, extract_tarball, sandbox_ref
from jobgate.staging.stager import Stager, storage
from jobgate.staging.urls import INPUT_SCHEMES, OUTPUT_SCHEMES, scheme_of

__all__ = [
    "INPUT_SCHEMES",
    "OUTPUT_SCHEMES",
    "SHA256",
    "PartialStagingError",
    "Stager",
    "extract_tarball",
    "local_path",
    "make_output_dirs",
    "pack_outputs",
    "sandbox_ref",
    "scheme_of",
    "storage",
]
