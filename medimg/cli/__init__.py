"""The ``medimg`` command: one thin layer over the library (see ``medimg --help``)."""
