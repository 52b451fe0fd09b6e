"""Generic helpers with no knowledge of datasets, models or training: the bottom of the import graph."""
