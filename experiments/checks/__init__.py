"""The checks study: every hand-written rule of fnnet's catalog checked three ways (``fnnet check``)."""
