"""A user's project folder: the Project API (api.py), its on-disk store and journal (store.py), the journal
operations as a table (ops.py) and the correction files (corrections.py)."""
