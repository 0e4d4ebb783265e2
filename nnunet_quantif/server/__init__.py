"""``quantif serve``: an HTTP session server over one model set, for browser and napari clients.

The server holds :class:`~nnunet_quantif.interactive.Session` objects, one per opened case, each owned by the
API key that opened it. The HTTP API (version :data:`API_VERSION`) is described in ``docs/api.json``
(regenerated with ``python3 -m nnunet_quantif.server.schema``) and summarised in ``docs/INTERACTIVE.md``.

Modules: ``settings`` (:class:`ServerSettings`, API keys), ``encoding`` (the compressed mask box of an update),
``uploads`` (streamed uploads with a size limit, safe zip extraction, paths under the data root, DICOM cases),
``sessions`` (:class:`SessionManager`: opening in a worker thread, one lock per device, idle timeout),
``app`` (:func:`create_app`, the FastAPI application), ``schema`` (the OpenAPI document) and ``client``
(:class:`QuantIFClient`, a small standard-library client used by the napari widget).
The web modules import FastAPI, which comes with the ``server`` extra.
"""

from __future__ import annotations

#: Version of the HTTP API; clients send theirs in :data:`VERSION_HEADER`.
API_VERSION = "1"

#: Header carrying the API key.
KEY_HEADER = "X-API-Key"

#: Header carrying the client's API version (optional).
VERSION_HEADER = "X-QuantIF-API-Version"

#: Prefix of the versioned routes.
API_PREFIX = "/api/v1"

__all__ = ["API_PREFIX", "API_VERSION", "KEY_HEADER", "VERSION_HEADER"]
