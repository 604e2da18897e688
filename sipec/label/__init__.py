"""`sipec label`: label identities and behaviours in the browser, on the masks of a `sipec analyze` result.

- :mod:`sipec.label.results`: the instances (masks) of results.parquet, and which of them to label;
- :mod:`sipec.label.store`: the labels on disk, written atomically after every change, read back on restart;
- :mod:`sipec.label.frames`: frames decoded on request, drawn with their masks, as JPEG;
- :mod:`sipec.label.server`: the local HTTP server (JSON API + the page in ``static/``);
- :mod:`sipec.label.cli`: the command.
"""
