"""Bulk reading: columns per event name (placeholder, filled below)."""


def read_columns(path, names=None):
    raise NotImplementedError
