"""The model document and the files that carry it.

- ``_schema`` and ``_document`` (torch-free): the one document of a fitted model (its
  parameters, tasks, calibration), checked before anything is built from it;
- ``_safe_file``: ``save``/``load`` (the JSON document and safetensors weights);
- ``_pickling``: versioned pickles; ``_versions`` (torch-free): the warning of a pickle
  from another version.
"""

from .. import _lazy_exports

__getattr__, __dir__, __all__ = _lazy_exports(
    __name__,
    {
        "_document": [
            "MAX_DOCUMENT_BYTES",
            "ModelDocument",
            "decode_params",
            "model_document",
            "package_versions",
            "parse_document",
            "read_document",
        ],
        "_pickling": [
            "VersionedPickleMixin",
            "load_fitted",
            "restore_fitted",
        ],
        "_safe_file": ["SavedModel", "model_bytes", "read_model", "save"],
        "_versions": ["InconsistentVersionWarning"],
        "_schema": [
            "FORMAT",
            "FORMAT_VERSION",
            "check_document",
            "check_fields",
            "data_sizes_frame",
        ],
    },
)
