"""Deprecated alias of :mod:`fnnet.data.files` (kept while tests import it; import from :mod:`fnnet.data`)."""

from fnnet.data.files import DataFileError, data_dir, fashion_mnist, load_idx, load_npz, mnist

__all__ = ["DataFileError", "data_dir", "fashion_mnist", "load_idx", "load_npz", "mnist"]
