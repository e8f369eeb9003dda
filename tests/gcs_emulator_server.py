"""Runs `gcp-storage-emulator` with the object-generation semantics real GCS has and
TensorStore relies on (``python tests/gcs_emulator_server.py PORT BUCKET``).

The emulator (2026.7.19) stores a generation per object but neither returns it on a media
download (real GCS sends ``x-goog-generation``) nor honours ``ifGenerationMatch`` /
``ifGenerationNotMatch``. TensorStore revalidates its cached OCDBT manifest with
``ifGenerationNotMatch`` and reads the generation from that header, so without it Orbax
saves fail now and then with "Malformed StorageGeneration". Three small wrappers add
exactly that; everything else is the package's own server (one thread: its in-memory store has
no locks).
"""
from __future__ import annotations

import sys
from http import HTTPStatus

from gcp_storage_emulator import server as emu
from gcp_storage_emulator.exceptions import NotFound
from gcp_storage_emulator.handlers import objects


def _generation(storage, bucket: str, name: str) -> str | None:
    try:
        return str(storage.get_file_obj(bucket, name).get("generation"))
    except NotFound:
        return None


def _preconditions_fail(request, response, current: str | None) -> bool:
    """Apply ifGenerationMatch / ifGenerationNotMatch (0 = "the object does not exist")."""
    q = request.query
    if "ifGenerationMatch" in q:
        want = q["ifGenerationMatch"][0]
        if (want == "0" and current is not None) or (want != "0" and want != current):
            response.status = HTTPStatus.PRECONDITION_FAILED
            return True
    if "ifGenerationNotMatch" in q and current is not None and q["ifGenerationNotMatch"][0] == current:
        response.status = HTTPStatus.NOT_MODIFIED
        return True
    return False


_download, _insert = objects.download, objects.insert


def download(request, response, storage, *args, **kwargs):
    gen = _generation(storage, request.params["bucket_name"], request.params["object_id"])
    if gen is not None:
        if _preconditions_fail(request, response, gen):
            return None
        response["x-goog-generation"] = gen
        response["x-goog-metageneration"] = "1"
    return _download(request, response, storage, *args, **kwargs)


def insert(request, response, storage, *args, **kwargs):
    name = request.query.get("name", [None])[0]
    if name is not None and "ifGenerationMatch" in request.query:
        if _preconditions_fail(request, response, _generation(storage, request.params["bucket_name"], name)):
            return None
    return _insert(request, response, storage, *args, **kwargs)


def _patch() -> None:
    objects.download, objects.insert = download, insert   # objects.get calls download by name
    for _, handlers in emu.HANDLERS:
        for method, fn in list(handlers.items()):
            if fn is _download:
                handlers[method] = download
            elif fn is _insert:
                handlers[method] = insert


def main(argv: list[str]) -> None:
    port, bucket = int(argv[0]), argv[1]
    _patch()
    emu.create_server("127.0.0.1", port, in_memory=True, default_bucket=bucket).run()


if __name__ == "__main__":
    main(sys.argv[1:])
