"""Dataset ingestion: sources, validation of bad files, profiling, splits and a decoded cache.

Resolve what the user brings (an ImageFolder tree, a Kaggle CSV layout, a torchvision
name, MNIST-style IDX files, or the bundled ``demo``) with :func:`resolve_source`, then
:func:`prepare_dataset` decodes every image once into uint8 ``.npy`` arrays with a
:class:`PreparedMeta` (classes, channels, stored size, mean/std, :class:`DatasetProfile`).
Test labels go only to a private directory. Bad files are counted skips; layout problems
raise :class:`DataError`.
"""

from automodel.data import _demo, _imagefolder, _kaggle, _torchvision  # noqa: F401  (register sources)
from automodel.data._collect import choose_stored_size
from automodel.data._decode import IMAGE_EXTENSIONS, MAX_PIXELS, decode_array, decode_file, is_image_name
from automodel.data._demo import DemoDataset, write_digits_demo
from automodel.data._errors import DataError, SkipReport
from automodel.data._prepare import (
    DEFAULT_MEMORY_BUDGET,
    PreparedData,
    PreparedMeta,
    prepare_dataset,
    profile_dataset,
)
from automodel.data._profile import DatasetProfile, SizeStats, build_profile
from automodel.data._source import (
    DatasetSource,
    Sample,
    SourceInfo,
    SubmissionFormat,
    cache_dir,
    list_sources,
    register_source,
    resolve_source,
)
from automodel.data._split import stratified_split, stratified_subset
from automodel.data._symmetry import FLIP_THRESHOLD, flip_change_rate
from automodel.data._torchvision import network_available

__all__ = [
    "FLIP_THRESHOLD",
    "flip_change_rate",
    "DEFAULT_MEMORY_BUDGET",
    "IMAGE_EXTENSIONS",
    "MAX_PIXELS",
    "DataError",
    "DatasetProfile",
    "DatasetSource",
    "DemoDataset",
    "PreparedData",
    "PreparedMeta",
    "Sample",
    "SizeStats",
    "SkipReport",
    "SourceInfo",
    "SubmissionFormat",
    "build_profile",
    "cache_dir",
    "choose_stored_size",
    "decode_array",
    "decode_file",
    "is_image_name",
    "list_sources",
    "network_available",
    "prepare_dataset",
    "profile_dataset",
    "register_source",
    "resolve_source",
    "stratified_split",
    "stratified_subset",
    "write_digits_demo",
]
