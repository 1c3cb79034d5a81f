"""X to decoded images: what a row's image is, how it is read, and how it is served.

- ``_sources`` (torch-free): X (a DataFrame, paths, bytes, PIL images, arrays, URLs) to
  image references; ``_storage`` (torch-free): URLs read through fsspec;
- ``_decoding`` and ``_bad_images`` (torch-free): read, orient, convert, resize; the rule
  for unreadable images;
- ``_dataset``: the torch ``Dataset`` that decodes images; ``_cache`` and ``_disk_cache``:
  decoded images kept in memory or in a memory-mapped file shared across fits;
- ``_files`` (torch-free): every file the package writes, written atomically.
"""

from .. import _lazy_exports

__getattr__, __dir__, __all__ = _lazy_exports(
    __name__,
    {
        "_bad_images": [
            "BAD_IMAGE_OPTIONS",
            "MISSING_OUTPUTS",
            "BadImageRecords",
            "decode_or_record",
            "describe_bad_images",
            "find_bad_images",
            "mark_unreadable",
            "screen_images",
            "warn_skipped",
        ],
        "_cache": ["MEMORY_FRACTION", "available_memory", "cached_images", "fits_in_memory"],
        "_dataset": [
            "BadImageLog",
            "EpochShuffler",
            "ImageDataset",
            "as_tensor",
            "bad_image_log",
            "decode_images",
            "decoded_batches",
            "load_image",
            "train_transform",
        ],
        "_decoding": [
            "MAX_IMAGE_SIZE",
            "MAX_TTA",
            "PIL_ERRORS",
            "array_pixels",
            "as_size",
            "check_image_size",
            "decode_image",
            "median_image_size",
            "open_image",
            "read_image",
            "source_name",
            "tta_views",
        ],
        "_disk_cache": ["DiskCachedImages", "disk_cached_images", "image_fingerprints"],
        "_files": [
            "MODEL_FORMATS",
            "PICKLE_SUFFIXES",
            "atomic_path",
            "atomic_write",
            "check_folder_named",
            "model_format",
            "same_file",
            "unwritable",
        ],
        "_sources": [
            "MemoryImage",
            "image_references",
            "input_rows",
            "input_table",
            "is_pixel_array",
            "resolve_images",
        ],
        "_storage": [
            "MAX_BYTES",
            "READ_ATTEMPTS",
            "TIMEOUT",
            "StorageUrl",
            "check_protocols",
            "is_url",
            "join_url",
            "read_limits",
            "read_url",
        ],
    },
)
