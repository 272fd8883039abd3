"""MTEB evaluation of plain ST and st_backend side by side (see the MTEB issue; not built yet)."""
